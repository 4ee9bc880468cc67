import json

import torch

from distillab.demo import demo
from distillab.figures import pick_dark_knowledge_examples


def test_demo_quick_distilled_student_at_least_as_good(tmp_path):
    result = demo(quick=True, out=tmp_path / "demo", quiet=True)
    m = json.loads((tmp_path / "demo/metrics.json").read_text())
    assert m.pop("environment")["torch_threads"] >= 1  # the file adds what the bits depend on (software, threads)
    assert m == json.loads(json.dumps(result.metrics))
    for name in ("teacher", "student_alone", "student_kd"):
        assert 0 < m[name]["test_accuracy"] <= 1
    assert m["student_kd"]["test_accuracy"] >= m["student_alone"]["test_accuracy"]
    assert m["teacher"]["test_accuracy"] > m["student_alone"]["test_accuracy"]
    report = (tmp_path / "demo/report.md").read_text()
    for name in ("teacher", "student_alone", "student_kd"):  # the table's figures are this run's
        assert f"{100 * m[name]['test_accuracy']:.2f}%" in report
    dd = m["dataset_distillation"]
    assert dd["images"] == 50 and 0 < dd["dm"]["test_accuracy"] <= 1 and 0 < dd["random_real"]["test_accuracy"] <= 1
    assert f"{100 * dd['dm']['test_accuracy']:.2f}" in report and (tmp_path / "demo/synset.safetensors").exists()
    for png in ("curves.png", "dark_knowledge.png", "synset.png"):
        assert (tmp_path / "demo" / png).read_bytes()[:4] == b"\x89PNG"


def test_dark_knowledge_examples_prefer_a_4_like_9():
    labels = torch.tensor([9, 9, 1, 4])
    probs = torch.tensor([[0.0] * 9 + [1.0], [0.0] * 4 + [0.3] + [0.0] * 4 + [0.7],
                          [0.0, 0.6] + [0.4] + [0.0] * 7, [0.0] * 4 + [0.8] + [0.0] * 4 + [0.2]])
    chosen = pick_dark_knowledge_examples(probs, labels, count=2)
    assert chosen[0] == 1 and len(chosen) == 2
