import pytest

from zoft.registry import Registry, UnknownNameError


def test_unknown_name_lists_close_matches_and_all_names():
    reg: Registry[int] = Registry("widget")
    reg.register("mezo")(1)
    reg.register("lozo")(2)
    with pytest.raises(UnknownNameError, match=r"Unknown widget 'mezzo'\. Did you mean 'mezo'"):
        reg.get("mezzo")
    with pytest.raises(UnknownNameError, match="Known widgets: lozo, mezo"):
        reg.get("zzz")


def test_double_registration_is_refused():
    reg: Registry[int] = Registry("widget")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(2)
