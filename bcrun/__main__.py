from bcrun.cli import main

main()
