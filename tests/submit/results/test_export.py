"""`qtrain results export --mlflow`: real runs on the real emulator, exported into a real
sqlite-backed MLflow tracking store, read back through MLflow's own client."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from submit.store import Store

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install '.[mlflow]')")
pytestmark = pytest.mark.usefixtures("emulator")


@pytest.fixture
def tracking(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _runs(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=100)


def test_a_run_exported_twice_is_one_mlflow_run_with_everything(qtrain, store_dir, tracking, tmp_path):
    run = qtrain("run", "penguins", "--set", "train.epochs=4", "--set", "split.val_size=0.2",
                 "--tag", "owner=ana", "--json", "--store", store_dir).json()
    first = qtrain("results", "export", "penguins", "--mlflow", tracking, "--json", "--store", store_dir)
    assert first.code == 0, first.err
    assert first.json()[0]["updated"] is False

    client = mlflow.MlflowClient(tracking_uri=tracking)
    [exported] = _runs(client, "penguins")
    assert exported.info.status == "FINISHED"
    params, metrics, tags = exported.data.params, exported.data.metrics, exported.data.tags
    assert params["train.epochs"] == "4" and params["split.val_size"] == "0.2"
    assert params["data.path"] == "palmerpenguins" and params["model.hidden"] == "[32, 32]"
    assert metrics["test/accuracy"] == pytest.approx(run["metrics"]["test"]["accuracy"])
    assert metrics["baseline/accuracy"] == pytest.approx(run["metrics"]["baseline"]["accuracy"])
    # what it cost and emitted (the emulator's model, said in a tag)
    assert metrics["footprint/cost_eur"] == pytest.approx(run["footprint"]["cost_eur"])
    assert metrics["footprint/co2_g"] == pytest.approx(run["footprint"]["co2_g"])
    assert exported.data.tags["qtrain.footprint_source"] == "emulated"
    history = client.get_metric_history(exported.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert tags["qtrain.run_id"] == run["run_id"] and tags["qtrain.task_uuid"] == run["task_uuid"]
    assert tags["qtrain.dataset_hash"] == run["dataset_hash"] and tags["tag.owner"] == "ana"
    assert tags["qtrain.backend"] == "local" and tags["qtrain.executor"]
    artifacts = {a.path for a in client.list_artifacts(exported.info.run_id)}
    assert {"metrics.json", "history.csv", "loss_curve.png", "confusion_matrix.png", "model.pt", "run.json"} <= artifacts
    assert not any(a.startswith(".") for a in artifacts)

    # the logged model predicts what `qtrain predict` predicts
    from runner.predict import load_model
    from runner.prepare import transform_table

    rows = pd.DataFrame({"bill_length_mm": [39.1, 46.5, 50.0], "bill_depth_mm": [18.7, 17.9, 15.2],
                         "flipper_length_mm": [181, 192, 218], "body_mass_g": [3750, 3500, 5700]})
    rows.to_csv(tmp_path / "new.csv", index=False)
    predicted = qtrain("predict", run["run_id"], tmp_path / "new.csv", "--store", store_dir)
    assert predicted.code == 0, predicted.err
    expected = pd.read_csv(pd.io.common.StringIO(predicted.out))["predicted"].tolist()
    mlflow.set_tracking_uri(tracking)
    model = mlflow.pytorch.load_model(f"runs:/{exported.info.run_id}/model")
    predictor = load_model(Store(store_dir).artifacts_dir(run["run_id"]))
    x = torch.from_numpy(transform_table(rows, predictor.preprocess, "new.csv"))
    with torch.no_grad():
        out = model(x)
    assert [predictor.classes[i] for i in out.argmax(1).tolist()] == expected

    again = qtrain("results", "export", run["run_id"], "--mlflow", tracking, "--json", "--store", store_dir)
    assert again.code == 0 and again.json()[0]["updated"] is True
    [same] = _runs(client, "penguins")
    assert same.info.run_id == exported.info.run_id
    assert len(client.get_metric_history(same.info.run_id, "val_loss")) == 4


def test_a_sweep_is_a_parent_with_one_nested_run_per_trial(qtrain, store_dir, csv_job, tracking):
    run = qtrain("run", csv_job, "--set", "split.val_size=0.2", "--set", "sweep={train.lr: [0.003, 0.03]}",
                 "--json", "--store", store_dir).json()
    for _ in range(2):
        result = qtrain("results", "export", run["run_id"], "--mlflow", tracking, "--json", "--store", store_dir)
        assert result.code == 0, result.err
    client = mlflow.MlflowClient(tracking_uri=tracking)
    runs = _runs(client, "table")
    assert len(runs) == 3  # exported twice, still one parent and two trials
    [parent] = [r for r in runs if r.data.tags["qtrain.trial"] == "run"]
    trials = {r.data.tags["qtrain.trial"]: r for r in runs if r.data.tags["qtrain.trial"] != "run"}
    assert set(trials) == {"0", "1"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials.values())
    assert trials["0"].data.params["train.lr"] == "0.003" and trials["1"].data.params["train.lr"] == "0.03"
    best = str(run["best"]["trial"])
    assert parent.data.tags["qtrain.best_trial"] == best and trials[best].data.tags["qtrain.best"] == "true"
    assert parent.data.metrics["test/accuracy"] == pytest.approx(run["metrics"]["test"]["accuracy"])
    assert {"sweep.json", "sweep.csv", "sweep.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    for r in trials.values():
        assert [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")] == [1, 2, 3]
        assert np.isfinite(r.data.metrics["val/accuracy"])


def test_runs_are_exported_as_they_are_retrieved_when_asked(qtrain, store_dir, tracking, monkeypatch):
    monkeypatch.setenv("QTRAIN_MLFLOW_EXPORT", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    run = qtrain("run", "penguins", "--set", "train.epochs=2", "--json", "--store", store_dir)
    assert run.code == 0 and "exported to MLflow" in run.err
    [exported] = _runs(mlflow.MlflowClient(tracking_uri=tracking), "penguins")
    assert exported.data.tags["qtrain.run_id"] == run.json()["run_id"]


def test_export_errors_are_one_line(qtrain, store_dir, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    qtrain("run", "penguins", "--set", "train.epochs=1", "--store", store_dir)
    missing = qtrain("results", "export", "penguins", "--store", store_dir)
    assert missing.code == 2 and "no tracking URI" in missing.err and "MLFLOW_TRACKING_URI" in missing.err
    down = qtrain("results", "export", "penguins", "--mlflow", "http://127.0.0.1:9", "--store", store_dir)
    assert down.code == 2 and "Traceback" not in down.err and "MLflow export" in down.err


def test_a_module_model_is_logged_with_its_code(qtrain, store_dir, tracking, tmp_path):
    """mlflow.pytorch.load_model rebuilds a run's own nn.Module in a fresh interpreter, where
    nothing of the job's folder exists any more: its code travelled with the model."""
    import subprocess
    import sys

    import yaml

    from tests.runner.test_usercode import MLP, SETTINGS

    project = tmp_path / "project"
    project.mkdir()
    (project / "net.py").write_text(MLP)
    (project / "job.yaml").write_text(yaml.safe_dump({**SETTINGS, "train": {"epochs": 2}, "model": {
        "kind": "module", "source": "net.py", "class": "MLP", "args": {"hidden": [8]}}}))
    run = qtrain("run", project / "job.yaml", "--json", "--store", store_dir).json()
    exported = qtrain("results", "export", run["run_id"], "--mlflow", tracking, "--json", "--store", store_dir)
    assert exported.code == 0, exported.err
    mlflow_run = exported.json()[0]["mlflow_run_id"]
    from runner.api import load_model

    width = len(load_model(Store(store_dir).artifacts_dir(run["run_id"])).preprocess["outputs"])
    import shutil

    shutil.rmtree(project)
    probe = (f"import mlflow, torch; mlflow.set_tracking_uri({tracking!r}); "
             f"path = mlflow.artifacts.download_artifacts('runs:/{mlflow_run}/model'); "
             "import pathlib; print(sorted(p.name for p in (pathlib.Path(path) / 'code').iterdir())); "
             f"m = mlflow.pytorch.load_model('runs:/{mlflow_run}/model'); "
             f"print(tuple(m(torch.zeros(2, {width})).shape))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.stdout.splitlines()[-2:] == ["['net.py']", "(2, 3)"], out.stderr[-2000:]


def test_a_script_run_exports_its_arguments_numbers_and_files(qtrain, store_dir, tracking, tmp_path):
    """A script job's run: its arguments as params, qtrain's metrics of its predictions and its own
    numbers, its files as artifacts (its model.pt the script's own: not logged as an MLflow model)."""
    import yaml

    from tests.submit.run.test_script_jobs import STEADY, _steady

    path = _steady(tmp_path)
    (tmp_path / "code" / "train.py").write_text(STEADY + "qtrain.log_metrics(my_score=0.25)\n")
    job = yaml.safe_load(path.read_text())
    job["script"]["args"]["hidden"] = 6
    path.write_text(yaml.safe_dump(job))
    run = qtrain("run", path, "--json", "--store", store_dir).json()
    exported = qtrain("results", "export", run["run_id"], "--mlflow", tracking, "--json", "--store", store_dir)
    assert exported.code == 0, exported.err
    client = mlflow.MlflowClient(tracking_uri=tracking)
    found = client.get_run(exported.json()[0]["mlflow_run_id"])
    assert found.data.params["script.args.hidden"] == "6" and "preprocess.scale" not in found.data.params
    assert found.data.metrics["test/accuracy"] == pytest.approx(run["metrics"]["test"]["accuracy"])
    assert found.data.metrics["reported/my_score"] == 0.25
    names = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"model.pt", "metrics.json", "confusion_matrix.png"} <= names and "model" not in names


@pytest.mark.parametrize("shape", ["tuple", "lazy", "modeloutput"])
def test_a_module_that_returns_a_tuple_or_is_lazy_exports_and_loads_without_qtrain(qtrain, store_dir, tracking,
                                                                                   tmp_path, shape):
    """The logged model carries the hook that takes its output tensor, pickled by value: it loads
    and predicts in an interpreter where qtrain's packages cannot be imported."""
    import subprocess
    import sys

    from tests.runner.test_model_outputs import SHAPES, _job

    path = _job(tmp_path / "project", SHAPES[shape])
    result = qtrain("run", path, "--json", "--store", store_dir)
    assert result.code == 0, result.err
    run = result.json()
    exported = qtrain("results", "export", run["run_id"], "--mlflow", tracking, "--json", "--store", store_dir)
    assert exported.code == 0, exported.err
    mlflow_run = exported.json()[0]["mlflow_run_id"]
    from runner.api import load_model

    width = len(load_model(Store(store_dir).artifacts_dir(run["run_id"])).preprocess["outputs"])
    probe = ("import sys; sys.modules.update(runner=None, jobs=None, submit=None); "
             f"import mlflow, torch; mlflow.set_tracking_uri({tracking!r}); "
             f"m = mlflow.pytorch.load_model('runs:/{mlflow_run}/model'); out = m(torch.zeros(2, {width})); "
             "print(type(out).__name__, tuple(out.shape))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.stdout.splitlines()[-1:] == ["Tensor (2, 3)"], out.stderr[-2000:]
