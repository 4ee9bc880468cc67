import pytest

from distillab.errors import DistillabError
from distillab.specs import Options, parse_spec


def test_parse_name_and_options():
    s = parse_spec("mlp:hidden=800-800,dropout=0.5")
    assert s.name == "mlp" and s.options == {"hidden": "800-800", "dropout": "0.5"}
    assert str(s) == "mlp:hidden=800-800,dropout=0.5"
    assert parse_spec("lenet5").options == {}


@pytest.mark.parametrize("bad", ["", "mlp:hidden", "mlp:=3"])
def test_bad_specs(bad):
    with pytest.raises(DistillabError):
        parse_spec(bad)


def test_options_types_ranges_and_unknown_keys():
    o = Options(parse_spec("x:a=3,b=0.5,c=1-2"), "spec")
    assert o.get_int("a", 0) == 3 and o.get_float("b", 0) == 0.5 and o.get_ints("c", []) == [1, 2]
    o.done()
    with pytest.raises(DistillabError, match="must be >= 1"):
        Options(parse_spec("x:a=0"), "spec").get_int("a", 1, 1)
    with pytest.raises(DistillabError, match="unknown option"):
        Options(parse_spec("x:zzz=1"), "spec").done()
    with pytest.raises(DistillabError, match="must be a number"):
        Options(parse_spec("x:b=abc"), "spec").get_float("b", 1.0)
