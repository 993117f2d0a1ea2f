"""Signals: inside the training loop a stop waits for the step's end; outside it stops at once."""

from __future__ import annotations

import os
import signal

import pytest

from zoft.run.signals import Interrupted, signal_flags


def test_a_stop_inside_training_waits_for_the_end_of_the_step():
    with signal_flags() as flags, flags.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        assert flags.stop == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGUSR1)
        assert flags.take_checkpoint_request() and not flags.take_checkpoint_request()


def test_a_stop_outside_training_interrupts_at_once():
    with signal_flags(), pytest.raises(Interrupted, match="outside training") as caught:
        os.kill(os.getpid(), signal.SIGTERM)
    assert caught.value.signum == signal.SIGTERM


def test_a_second_ctrl_c_interrupts_at_once():
    with signal_flags() as flags, flags.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(Interrupted, match="second Ctrl-C") as caught:
            os.kill(os.getpid(), signal.SIGINT)
    assert caught.value.at_once and caught.value.exit_code == 130


def test_a_stop_is_no_exception_that_generic_handlers_swallow():
    """Loading code that rewraps every Exception (the hub loaders) must let a stop through."""
    with signal_flags(), pytest.raises(Interrupted):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except Exception:  # noqa: BLE001 (what such code does)
            pytest.fail("the stop was caught as an Exception")


def test_a_stop_while_records_are_written_is_noted_not_raised():
    with signal_flags() as flags, flags.shielded():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert flags.stop == signal.SIGTERM


def test_the_previous_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with signal_flags():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
