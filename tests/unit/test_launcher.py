from __future__ import annotations

import signal

from bcrun.launcher import ExitStatus, signal_name


def test_exit_codes_and_signals_decode_like_a_shell():
    assert ExitStatus.from_returncode(0) == ExitStatus(code=0)
    assert ExitStatus.from_returncode(255).shell_code == 255
    status = ExitStatus.from_returncode(-signal.SIGTERM)
    assert status.signal == signal.SIGTERM
    assert status.shell_code == 128 + signal.SIGTERM
    assert status.describe() == "terminated by SIGTERM"
    assert ExitStatus(code=3).describe() == "exited with status 3"


def test_unknown_signal_names():
    assert signal_name(signal.SIGKILL) == "SIGKILL"
    assert signal_name(200) == "signal 200"
