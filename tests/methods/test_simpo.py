"""SimPO (TRL's CPO trainer with the SimPO loss) on the tiny Llama: its settings reach the trainer."""

from tests.helpers import FAST, layers_of, plan_of, run_spec, write_jsonl

PAIRS = [{"prompt": f"Name {i}?", "chosen": "Chatty.", "rejected": "I have no name."} for i in range(8)]


def test_the_plan_shows_the_simpo_objective(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", PAIRS)
    plan = plan_of(tiny_project, **{"method: sft": "method: simpo"})
    assert plan.objective.startswith("SimPO: -log sigmoid(beta x (mean log-prob of chosen")
    assert plan.training_path.startswith("TRL CPOTrainer with loss_type simpo")
    assert (plan.settings.method["beta"].value, plan.settings.method["gamma"].value, plan.settings.method["cpo_alpha"].value) == (2.0, 1.0, 0.0)
    assert "reference model" not in {item.name for item in plan.memory.items}


def test_simpo_trains_the_selected_block(tiny_project, tmp_path, monkeypatch):
    from trl.experimental.cpo import CPOTrainer

    seen = {}
    original = CPOTrainer.__init__

    def spy(self, *args, **kwargs):
        config = kwargs["args"]
        seen.update(loss_type=config.loss_type, beta=config.beta, gamma=config.simpo_gamma, alpha=config.cpo_alpha)
        original(self, *args, **kwargs)

    monkeypatch.setattr(CPOTrainer, "__init__", spy)
    write_jsonl(tmp_path / "data" / "train.jsonl", PAIRS)
    code, _, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: freeze\n  layers: last:1\n"
                                 "simpo:\n  gamma: 0.5\n  cpo_alpha: 0.1\n", **{"method: sft": "method: simpo"})
    assert code == 0, manifest.error
    assert seen == {"loss_type": "simpo", "beta": 2.0, "gamma": 0.5, "alpha": 0.1}
    assert layers_of(manifest.parameters.changed) == {"3"} and manifest.parameters.unexpected == []
    assert "rewards/accuracies" in manifest.metrics.method and "rewards/margins" in manifest.metrics.method
