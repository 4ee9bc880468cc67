import pytest

from distillab.errors import DistillabError
from distillab.specs import parse_spec


def test_parse_name_and_options():
    s = parse_spec("mlp:hidden=800-800,dropout=0.5")
    assert s.name == "mlp" and s.options == {"hidden": "800-800", "dropout": "0.5"}
    assert str(s) == "mlp:hidden=800-800,dropout=0.5"
    assert parse_spec("lenet5").options == {}


@pytest.mark.parametrize("bad", ["", "mlp:hidden", "mlp:=3"])
def test_bad_specs(bad):
    with pytest.raises(DistillabError):
        parse_spec(bad)


def test_options_dataclasses_read_types_and_refuse_unknown_keys():
    from dataclasses import dataclass

    from distillab.specs import options_from_spec, options_from_values, spec_string

    @dataclass
    class X:
        a: int = 0
        b: float = 0.0
        c: tuple[int, ...] = (8,)

    x = options_from_spec(X, parse_spec("x:a=3,b=0.5,c=1-2").options, "spec")
    assert (x.a, x.b, x.c) == (3, 0.5, (1, 2)) and spec_string("x", x) == "x:a=3,b=0.5,c=1-2"
    assert options_from_spec(X, {"c": ""}, "spec").c == ()  # no hidden layers
    assert options_from_values(X, {"c": [4, 5]}, "file").c == (4, 5)
    with pytest.raises(DistillabError, match="unknown option"):
        options_from_spec(X, {"zzz": "1"}, "spec")
    with pytest.raises(DistillabError, match="must be a number"):
        options_from_spec(X, {"b": "abc"}, "spec")
    with pytest.raises(DistillabError, match="whole numbers joined by '-'"):
        options_from_spec(X, {"c": "1-x"}, "spec")
    with pytest.raises(DistillabError, match="not a valid"):
        options_from_values(X, {"c": ["4"]}, "file")
