"""sweep.checkpoint.StopSignals with real signals sent to this process: what a job does with SIGUSR2/SIGTERM."""
import os
import signal

import pytest

from sweep.checkpoint import StopSignals


@pytest.fixture
def handler():
    """A stand-in for submitit's USR2 handler that, like it, must not be entered twice: while it works (its
    checkpoint dump) the signal comes again, as SLURM delivered it twice, 10-25 ms apart, to a requeued job."""
    calls = []

    def prev(signum, frame):
        calls.append(signum)
        if len(calls) > 1:
            raise AssertionError("the previous handler was re-entered")
        os.kill(os.getpid(), signal.SIGUSR2)  # the second copy, delivered while this handler runs
        raise SystemExit(-1)  # submitit requeues, then sys.exit(-1)

    old = signal.signal(signal.SIGUSR2, prev)
    yield prev, calls
    signal.signal(signal.SIGUSR2, old)


def test_signals_during_setup_wait_and_reach_the_previous_handler_once(handler):
    prev, calls = handler
    with pytest.raises(SystemExit) as e, StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGUSR2)  # during set-up: only the flag is set
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.hit == signal.SIGUSR2 and calls == []
        stop.forward()  # the trainer, after the checkpoint
    assert e.value.code == -1 and calls == [signal.SIGUSR2]
    assert signal.getsignal(signal.SIGUSR2) is prev  # restored on exit


def test_a_signal_not_forwarded_is_raised_on_exit(handler):
    prev, calls = handler
    with pytest.raises(SystemExit), StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGUSR2)  # e.g. during the final evaluation, after the last step
        assert stop.hit == signal.SIGUSR2 and calls == []
    assert calls == [signal.SIGUSR2]  # deferred, not dropped


def test_forward_with_no_signal_sends_sigterm_to_a_bypassing_handler():
    """A rank stopped because another rank got the signal forwards SIGTERM; submitit's SIGTERM handler only logs."""
    seen = []
    old = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        with StopSignals() as stop:
            stop.forward()
        assert seen == [signal.SIGTERM] and stop.hit == signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, old)
