from bcrun.main import main

main()
