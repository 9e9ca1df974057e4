"""Studies, the study CLI and the results report, on a tiny slice of MNIST (JAX, a few seconds)."""

import json

import pytest

from experiments import report, study
from experiments.data import DataNotFoundError, load_dataset
from experiments.presets import get_preset
from experiments.studies import STUDIES, run_dir
from experiments.machine import cpu_description, cpu_vector_extension


def test_every_study_run_names_a_preset_of_its_dataset_and_distinct_dirs() -> None:
    for s in STUDIES.values():
        dirs = [run_dir(s, c) for c in s.for_backend("jax")]
        assert len(set(dirs)) == len(dirs), s.name
        for config in s.runs:
            assert get_preset(config.model).dataset == config.dataset
    assert {c.optimizer.name for c in STUDIES["optimizers"].runs} == {"sgd", "adam", "rmsprop", "adadelta"}
    assert all(c.epochs == 25 and c.batch_size == 100 for c in STUDIES["mnist-table"].runs)
    assert all(c.optimizer.name == "adadelta" and c.epochs == 100 for c in STUDIES["cifar-table"].runs)


def test_report_of_an_empty_results_folder(tmp_path) -> None:
    text = report.render(tmp_path)
    assert "not run yet" in text and "CIFAR-10 (JPEG q75 copy)" in text
    assert "| tt-tt | jax | 791,294 | 791,294 |" in text
    assert "- `tt-tt-d2`: tt-tt with 2 cores: TT 784 (28,28) -> 262144 (512,512) r4, TT -> 10 (5,2) r4" in text
    assert text.count("- `tt-tt`: TT 784 (2,2,7,4,7)") == 5  # mnist-table, optimizers, ranks, modes, thesis-mnist


def test_a_run_planned_by_several_studies_is_trained_once_and_shown_in_each(tmp_path) -> None:
    def dirs(keep) -> set:
        return {run_dir(s, c, tmp_path) for s in STUDIES.values() for c in s.for_backend("torch") if keep(c)}

    home = tmp_path / "mnist-table" / "tt-tt-torch"
    assert dirs(lambda c: c.model == "tt-tt" and c.optimizer.name == "sgd" and c.recipe == "ours") == {home}
    assert dirs(lambda c: c.optimizer.name == "adam" and c.recipe == "ours") == {
        tmp_path / "optimizers" / "tt-tt-adam-torch"}
    assert dirs(lambda c: c.model == "tt-tt-r8") == {tmp_path / "ranks" / "tt-tt-r8-torch"}
    home.mkdir(parents=True)
    (home / "summary.json").write_text(json.dumps({
        "epochs_run": 25, "test_acc": 0.9679, "epoch_chosen_on_val": 25, "best_test_acc_thesis_protocol": 0.9681,
        "best_test_epoch_thesis_protocol": 23, "train_time_s": 25 * 174.0, "device": "torch cuda",
    }))
    rows = [line for line in report.render(tmp_path).splitlines() if "96.79% (ep 25)" in line]
    assert len(rows) == 4  # mnist-table, optimizers, ranks, modes
    assert rows[0].startswith("| tt-tt | torch |") and "same run" not in rows[0]
    assert rows[1].startswith("| tt-tt-sgd | torch |")
    assert all("same run as mnist-table's tt-tt" in row and "25/25" in row for row in rows[1:])


def test_study_runs_skips_finished_runs_and_reports(tmp_path) -> None:
    try:
        load_dataset("mnist", limit=10)
    except DataNotFoundError as error:
        pytest.skip(f"MNIST not available: {error}")
    args = ["mnist-table", "--backend", "jax", "--only", "tt-tt-tt", "--epochs", "1", "--limit", "300",
            "--max-batches", "2", "--results", str(tmp_path)]
    first = study.main(args)
    assert [s["status"] for s in first] == ["finished"]
    out = tmp_path / "mnist-table" / "tt-tt-tt-jax"
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 1
    assert [s["status"] for s in study.main(args)] == ["skipped"]
    output = tmp_path / "RESULTS.md"
    report.main(["--results", str(tmp_path), "--output", str(output)])
    text = output.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| tt-tt-tt | jax |"))
    assert "shortened: 1 of 25 planned epochs" in row and "data limited to 300" in row and "(ep 1)" in row
    summary = json.loads((out / "summary.json").read_text())
    assert summary["freed_memory_retained"] is False  # conftest sets TT_RETAIN_MEMORY=0 for the test process
    assert summary["tt_directions"] == ["rtl", "ltr", "rtl"] and "contracted" not in row
    assert len(summary["tt_plans"]) == 3 and "ran the plans" not in row
    if "cpu" in summary["device"]:
        assert summary["cpu_simd"] == cpu_vector_extension()
        assert f"({cpu_description(summary['cpu'], summary['cpu_simd'])})" in row


def test_report_plots_each_study_with_metrics_and_links_the_plot(tmp_path) -> None:
    results, output = tmp_path / "results", tmp_path / "RESULTS.md"
    for backend in ("jax", "torch"):
        run = results / "mnist-table" / f"tt-tt-tt-{backend}"
        run.mkdir(parents=True)
        rows = [{"epoch": e, "train_loss": 1.0 / e, "val_acc": 0.9 + e / 100, "test_acc": 0.9} for e in (1, 2, 3)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert set(report.study_curves(STUDIES["mnist-table"], results)) == {("tt-tt-tt", "jax"), ("tt-tt-tt", "torch")}
    report.main(["--results", str(results), "--output", str(output)])
    plot = results / "mnist-table" / "curves.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (results / "optimizers" / "curves.png").exists()  # no run of that study has an epoch
    text = output.read_text()
    # the ablation study shows the same run (our recipe's tt-tt-tt) and plots it too
    assert "(results/mnist-table/curves.png)" in text and "(results/ablation/curves.png)" in text
    assert text.count("curves.png") == 2
    assert "in progress / interrupted after 3 of 25 epochs" in text


def test_report_notes_a_run_whose_tt_layers_contracted_in_another_direction(tmp_path) -> None:
    summary = {"epochs_run": 25, "test_acc": 0.9673, "epoch_chosen_on_val": 23, "best_test_acc_thesis_protocol": 0.9675,
               "best_test_epoch_thesis_protocol": 24, "train_time_s": 25 * 128.0, "device": "torch cpu"}
    for model, directions in (("tt-tt-d4", ["ltr", "rtl"]), ("tt-tt-d6", ["rtl", "rtl"])):
        run = tmp_path / "modes" / f"{model}-torch"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({**summary, "tt_directions": directions}))
    rows = {line.split(" | ")[0][2:]: line for line in report.render(tmp_path).splitlines() if "96.73%" in line}
    assert "TT layers contracted ltr, rtl (today rtl, rtl: a later direction rule" in rows["tt-tt-d4"]
    assert "contracted" not in rows["tt-tt-d6"]


def test_report_notes_a_run_whose_tt_layers_merged_cores_another_way(tmp_path) -> None:
    summary = {"epochs_run": 25, "test_acc": 0.9666, "epoch_chosen_on_val": 25, "best_test_acc_thesis_protocol": 0.9670,
               "best_test_epoch_thesis_protocol": 24, "train_time_s": 25 * 150.0, "tt_directions": ["rtl", "rtl"]}
    tt_tt_jax_cpu = [[[2, 1, 2], "rtl"], [[2, 3], "rtl"]]  # with XLA:CPU's cost per small product
    for model, backend, device, plans in (("tt-tt-d6", "torch", "torch cpu", [[[3, 1, 2], "rtl"], [[2, 4], "rtl"]]),
                                          ("tt-tt-d6", "jax", "jax cpu: cpu", [[[2, 1, 3], "rtl"], [[2, 4], "rtl"]]),
                                          ("tt-tt", "jax", "jax cpu: cpu", tt_tt_jax_cpu),
                                          ("tt-tt", "torch", "torch cpu", tt_tt_jax_cpu)):
        run = tmp_path / ("modes" if model == "tt-tt-d6" else "mnist-table") / f"{model}-{backend}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({**summary, "device": device, "tt_plans": plans}))
    rows = {tuple(line.split(" | ")[:2]): line for line in report.render(tmp_path).splitlines() if "96.66%" in line}
    want = "TT layers ran the plans (3, 1, 2) rtl, (2, 4) rtl (today (2, 1, 3) rtl, (2, 4) rtl"
    assert want in rows["| tt-tt-d6", "torch"]
    assert "ran the plans" not in rows["| tt-tt-d6", "jax"] and "ran the plans" not in rows["| tt-tt", "jax"]
    assert "(today (2, 1, 1, 1) rtl, (2, 3) rtl" in rows["| tt-tt", "torch"]
