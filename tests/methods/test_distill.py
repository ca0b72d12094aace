"""Distillation on the tiny Llama: a teacher of another seed (or another spec's run), its options reaching TRL's
GKD trainer, a vocabulary mismatch refused, and a student that moves towards the teacher."""

import pytest

from runner.errors import RunnerError
from runner.plan.planner import PlanError, make_plan
from runner.spec.check import check_spec
from tests.helpers import CPU, FAST, run_spec
from tests.tiny import make_model


@pytest.fixture
def teacher(tmp_path):
    return make_model(tmp_path / "teacher", seed=1)


def distill(tiny_project, section: str, mode: str = "full"):
    return run_spec(tiny_project, FAST + f"trainable:\n  mode: {mode}\ndistill:\n" + section,
                    **{"method: sft": "method: distill"})


def test_distill_options_reach_the_trainer_s_arguments(tiny_project, teacher, built):
    code, _, manifest = distill(tiny_project, "  teacher: ./teacher\n  on_policy: 0.25\n  beta: 0.1\n"
                                              "  temperature: 0.7\n  max_completion_length: 5\n")
    assert code == 0, manifest.error
    (trainer,) = built
    assert (trainer.lmbda, trainer.beta, trainer.temperature, trainer.args.max_new_tokens) == (0.25, 0.1, 0.7, 5)
    assert trainer.teacher_model is not None and manifest.plan.inputs.teacher_model.reference == "./teacher"
    memory = {item.name for item in manifest.plan.memory.items}
    assert "teacher model" in memory and manifest.plan.loss_mask.generation_tokens == 5


@pytest.mark.slow
@pytest.mark.parametrize("on_policy", [0.0, 1.0])
def test_distillation_on_and_off_policy_trains_the_student(tiny_project, teacher, on_policy):
    code, _, manifest = distill(tiny_project, f"  teacher: ./teacher\n  on_policy: {on_policy}\n"
                                              "  max_completion_length: 6\n")
    assert code == 0, manifest.error
    assert set(manifest.parameters.changed) == set(manifest.plan.trainable.trained)
    assert manifest.metrics.train_loss > 0  # the teacher is another model: there is a divergence to reduce


def test_a_teacher_with_another_vocabulary_is_refused_by_the_plan(tiny_project, tmp_path):
    make_model(tmp_path / "other", vocab_size=280)
    spec = tiny_project("version: 1\nname: tiny\nmethod: distill\nbase_model: ./model\ndata:\n"
                        "  train: data/train.jsonl\ndistill:\n  teacher: ./other\n")
    with pytest.raises(PlanError, match="the teacher has a vocabulary of 280 tokens, the student 300"):
        make_plan(spec, run_root=tmp_path, machine=CPU)


@pytest.mark.slow
def test_a_teacher_may_be_another_spec_s_run(tiny_project, tmp_path):
    text = ("version: 1\nname: student\nmethod: distill\nbase_model: ./model\ndata:\n  train: data/train.jsonl\n"
            "distill:\n  teacher: {job: big-teacher}\n")
    errors = [(d.path, d.summary) for d in check_spec(tiny_project(text)).errors]
    assert errors and errors[0][0] == "distill.teacher.job" and "no spec named 'big-teacher'" in errors[0][1]
    tiny_project("version: 1\nname: big-teacher\nmethod: sft\nbase_model: ./model\ndata:\n  train: data/train.jsonl\n"
                 + FAST, name="teacher.yaml")
    student = tiny_project(text)
    assert check_spec(student).errors == []
    with pytest.raises(RunnerError, match="'big-teacher' has no succeeded run"):
        make_plan(student, run_root=tmp_path, machine=CPU)
    from runner.execute.job import run_plan
    from runner.spec import jobs

    assert jobs.jobs_named(check_spec(student).spec) == ["big-teacher"]  # the daemon waits for it
    assert run_plan(make_plan(tmp_path / "teacher.yaml", run_root=tmp_path, machine=CPU), run_root=tmp_path,
                    console=False)[0] == 0
    plan = make_plan(student, run_root=tmp_path, machine=CPU)
    assert plan.inputs.teacher_model.kind == "job" and "big-teacher" in plan.inputs.teacher_model.job_run
