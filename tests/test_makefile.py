"""The Makefile's command lines (``make -n``): a path with spaces or quotes reaches a tool as one argument."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def _commands(target: str, *variables: str) -> list[list[str]]:
    """The commands ``make -n`` prints for ``target`` (lines joined), split as the shell would split them."""
    result = subprocess.run(["make", "-n", "--no-print-directory", target, *variables], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = result.stdout.replace("\\\n", " ")
    return [shlex.split(line) for line in text.splitlines() if " -m " in line]


def _tool(commands: list[list[str]], module: str) -> list[str]:
    found = [argv for argv in commands if module in argv]
    assert len(found) == 1, commands
    return found[0]


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_paths_with_spaces_and_quotes_are_one_argument(tmp_path: Path) -> None:
    model = "/tmp/my models/it's.caffemodel"
    deploy = "/tmp/my nets/deploy.prototxt"
    lists = "data/ft/my lists"
    argv = _tool(_commands("eval", f"MODEL={model}", f"DEPLOY={deploy}", f"FT_DIR={lists}",
                           f"DATA={tmp_path / 'no such data'}"), "tools.evaluate")
    assert _value(argv, "--model") == model and _value(argv, "--deploy") == deploy
    assert _value(argv, "--table") == f"{lists}/split0/test.csv"
    assert _value(argv, "--out") == "results/my_lists_shallow"  # a name made from a path: no space

    argv = _tool(_commands("predict", f"MODEL={model}", f"DEPLOY={deploy}", "IMAGES=a.png b.png",
                           "PRED_OUT=my results/p.csv"), "tools.predict")
    assert _value(argv, "--model") == model and _value(argv, "--out") == "my results/p.csv"
    assert argv[argv.index("--images") + 1:argv.index("--images") + 3] == ["a.png", "b.png"]  # a list

    argv = _tool(_commands("finetune", f"RANK_MODEL={model}", f"FT_DIR={lists}", "DATA=/d a/t"),
                 "tools.train")
    assert _value(argv, "--rank-model") == model and _value(argv, "--lists") == f"{lists}/split0"
    assert _value(argv, "--out") == "runs/ft_my_lists_shallow_split0_from-it's"

    argv = _tool(_commands("ranks", "PRISTINE=/my photos", "RANKS_DIR=data/ranks/my set"),
                 "data_prep.make_ranks")
    assert _value(argv, "--pristine") == "/my photos" and _value(argv, "--out") == "data/ranks/my set"


def test_fine_tuning_lists_are_checked_whenever_their_data_folder_is_given_or_there(tmp_path: Path) -> None:
    lists = tmp_path / "ft"
    (lists / "split0").mkdir(parents=True)
    (lists / "split0" / "train.txt").write_text("/x.png 1\n")
    absent = tmp_path / "absent"
    cases = [  # (variables, whether make_ft_lists is asked)
        ([f"FT_DIR={tmp_path / 'none'}"], True),  # no lists yet
        ([f"FT_DIR={lists}", f"DATA={tmp_path}"], True),  # the data folder given (and there)
        ([f"FT_DIR={lists}", f"DATA={absent}"], True),  # given, even when it is not there: the tool says so
    ]
    for variables, asked in cases:
        commands = _commands("finetune", "DATASET=kadid", *variables)
        assert any("data_prep.make_ft_lists" in argv for argv in commands) == asked, variables


# The default DATA (/data/<DATASET>) cannot be made "not given" from a test: where it exists, say so.
_NO_DEFAULT_KADID = pytest.mark.skipif(Path("/data/kadid").exists(),
                                       reason="/data/kadid exists: the default DATA is there on this machine")


@_NO_DEFAULT_KADID
def test_lists_are_kept_when_data_is_not_given_and_the_default_folder_is_not_there(tmp_path: Path) -> None:
    lists = tmp_path / "ft"
    (lists / "split0").mkdir(parents=True)
    (lists / "split0" / "train.txt").write_text("/x.png 1\n")
    commands = _commands("finetune", "DATASET=kadid", f"FT_DIR={lists}")
    assert not any("data_prep.make_ft_lists" in argv for argv in commands)


def test_ranks_with_dask_run_the_dask_generator_with_the_same_options() -> None:
    argv = _tool(_commands("ranks", "DASK=tcp://scheduler:8786", "RANK_TYPES=GN"), "data_prep.dask_ranks")
    assert _value(argv, "--dask") == "tcp://scheduler:8786" and _value(argv, "--types") == "GN"
    local = _tool(_commands("ranks", "RANK_TYPES=GN"), "data_prep.make_ranks")
    assert argv[argv.index("--dask") + 2:] == local[local.index("data_prep.make_ranks") + 1:]


def test_ranks_default_to_the_originals_types_and_rank_types_gets_its_own_folder() -> None:
    default = _tool(_commands("ranks"), "data_prep.make_ranks")
    assert "--types" not in default  # the generator's default: the original's 18 listed types
    assert _value(default, "--out") == "data/ranks/tid2013"
    every = _tool(_commands("ranks", "RANK_TYPES=all"), "data_prep.make_ranks")
    assert _value(every, "--types") == "all" and _value(every, "--out") == "data/ranks/tid2013_all"
    subset = _tool(_commands("ranks", "RANK_TYPES=GN,HFN"), "data_prep.make_ranks")
    assert _value(subset, "--out") == "data/ranks/tid2013_GN-HFN"


def test_train_rank_passes_weights_none_and_names_the_run_after_the_types(tmp_path: Path) -> None:
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    (ranks / "manifest.csv").write_text("reference,type,level,path,split\n")  # no `make ranks` needed
    argv = _tool(_commands("train_rank", "NET=vgg16", "WEIGHTS=none", "RANK_TYPES=all", f"RANKS_DIR={ranks}"),
                 "tools.train")
    assert _value(argv, "--weights") == "none" and _value(argv, "--out") == "runs/rank_tid2013_all_vgg16"


def test_gpus_replaces_gpu_so_that_training_takes_it(tmp_path: Path) -> None:
    # tools/train.py refuses --gpu with --gpus: several GPUs must reach it as --gpus alone.
    from tools import train

    ranks = tmp_path / "ranks"
    ranks.mkdir()
    (ranks / "manifest.csv").write_text("reference,type,level,path,split\n")
    for target, variables in (("train_rank", [f"RANKS_DIR={ranks}", "WEIGHTS=none"]),
                              ("finetune", [f"FT_DIR={tmp_path / 'ft'}"])):
        argv = _tool(_commands(target, "GPUS=0,1", *variables), "tools.train")
        assert _value(argv, "--gpus") == "0,1" and "--gpu" not in argv, argv
        assert train.run_config(argv[argv.index("tools.train") + 1:]).gpus
        argv = _tool(_commands(target, "GPU=-1", *variables), "tools.train")
        assert _value(argv, "--gpu") == "-1" and "--gpus" not in argv, argv


def test_split_original_writes_and_uses_the_originals_split(tmp_path: Path) -> None:
    assert "--original-split" in _tool(_commands("ft_lists", "SPLIT=original"), "data_prep.make_ft_lists")
    assert "--original-split" not in _tool(_commands("ft_lists"), "data_prep.make_ft_lists")
    argv = _tool(_commands("finetune", "SPLIT=original", f"FT_DIR={tmp_path / 'ft'}"), "tools.train")
    assert _value(argv, "--lists") == f"{tmp_path / 'ft'}/splitoriginal"


def test_export_and_predict_with_onnx_build_no_caffe() -> None:
    def builds_caffe(*variables: str) -> bool:
        result = subprocess.run(["make", "-n", "--no-print-directory", *variables], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return "build_caffe.sh |" in result.stdout  # the `caffe` target's build, not the venv's --venv-deps

    model = "/my models/it's.caffemodel"
    argv = _tool(_commands("export", f"MODEL={model}", "DEPLOY=d.prototxt", "OUT=out dir/m.onnx",
                           "PRED_DIRECTION=lower_better"), "tools.export_onnx")
    assert _value(argv, "--model") == model and _value(argv, "--out") == "out dir/m.onnx"
    assert _value(argv, "--deploy") == "d.prototxt" and _value(argv, "--direction") == "lower_better"
    assert "--out" not in _tool(_commands("export", "MODEL=m.caffemodel"), "tools.export_onnx")
    argv = _tool(_commands("predict", "BACKEND=onnx", "MODEL=m.onnx", "IMAGES=a.png"), "tools.predict")
    assert _value(argv, "--backend") == "onnx" and "--deploy" not in argv
    assert _value(_tool(_commands("predict", "MODEL=m.caffemodel", "IMAGES=a.png"), "tools.predict"),
                  "--backend") == "caffe"
    assert not builds_caffe("export", "MODEL=m.caffemodel")
    assert not builds_caffe("predict", "BACKEND=onnx", "MODEL=m.onnx", "IMAGES=a.png")
    assert builds_caffe("predict", "MODEL=m.caffemodel", "IMAGES=a.png")


@pytest.mark.parametrize(("dataset", "net", "deploy"), [
    ("tid2013", "vgg16", "prototxts/vgg16/ft_tid2013_deploy.prototxt"),
    ("kadid", "vgg16", "prototxts/vgg16/ft_tid2013_deploy.prototxt"),
    ("live", "vgg16", "prototxts/vgg16/ft_deploy.prototxt"),
    ("csiq", "vgg16", "prototxts/vgg16/ft_deploy.prototxt"),
    ("mlive", "vgg16", "prototxts/vgg16/ft_deploy.prototxt"),
    ("tid2013", "shallow", "prototxts/shallow/ft_deploy.prototxt"),
])
def test_eval_picks_the_deploy_net_from_dataset_and_net(dataset: str, net: str, deploy: str) -> None:
    chosen = (f"DATASET={dataset}", f"NET={net}")
    argv = _tool(_commands("eval", "MODEL=m.caffemodel", *chosen), "tools.evaluate")
    assert _value(argv, "--deploy") == deploy
    argv = _tool(_commands("predict", "MODEL=m.caffemodel", "IMAGES=a.png", *chosen), "tools.predict")
    assert _value(argv, "--deploy") == deploy


def test_train_rank_online_needs_no_rank_set_and_passes_the_pristine_images(tmp_path: Path) -> None:
    ranks = tmp_path / "no ranks"  # never made: ONLINE=1 must not ask `make ranks` for it
    commands = _commands("train_rank", "ONLINE=1", "NET=shallow", f"RANKS_DIR={ranks}",
                         f"PRISTINE={tmp_path}/my photos", "RANK_TYPES=GN,ID",
                         "PRECOMPUTED=data/ranks/tid2013_ID", "OFFLINE_TYPES=ID,CQD")
    assert not [argv for argv in commands if "data_prep.make_ranks" in argv]
    argv = _tool(commands, "tools.train")
    assert "--online" in argv and "--data" not in argv
    assert _value(argv, "--pristine") == f"{tmp_path}/my photos" and _value(argv, "--types") == "GN,ID"
    assert _value(argv, "--precomputed") == "data/ranks/tid2013_ID"
    assert _value(argv, "--offline-types") == "ID,CQD"
    assert _value(argv, "--out") == "runs/rank_tid2013_GN-ID_shallow_online"
    plain = _tool(_commands("train_rank", f"RANKS_DIR={ranks}"), "tools.train")
    assert "--online" not in plain and "--offline-types" not in plain and "--types" not in plain
    # a rank set on disk with RANK_TYPES: the driver is told the types, to check the set holds them
    on_disk = _tool(_commands("train_rank", f"RANKS_DIR={ranks}", "RANK_TYPES=GN,GB"), "tools.train")
    assert _value(on_disk, "--data") == str(ranks) and _value(on_disk, "--types") == "GN,GB"
    assert _value(plain, "--data") == str(ranks)


def test_cross_passes_every_model_deploy_and_dataset_and_makes_missing_tables() -> None:
    commands = _commands("cross", "MODELS=a.caffemodel b.caffemodel", "DEPLOYS=x.prototxt y.prototxt",
                         "CROSS_DIRECTIONS=lower_better", "DATASETS=tid2013 mlive",
                         "DATA_mlive=/my data/mlive", "CROSS_OUT=results/my cross")
    argv = _tool(commands, "tools.cross_dataset")
    pairs = list(zip(argv, argv[1:], strict=False))
    assert [v for f, v in pairs if f == "--model"] == ["a.caffemodel", "b.caffemodel"]
    assert [v for f, v in pairs if f == "--deploy"] == ["x.prototxt", "y.prototxt"]
    assert [v for f, v in pairs if f == "--model-direction"] == ["lower_better"]
    assert [v for f, v in pairs if f == "--dataset"] == ["tid2013=data/ft/tid2013/table.csv",
                                                          "mlive=data/ft/mlive/table.csv"]
    assert _value(argv, "--out") == "results/my cross"
    lists = {_value(a, "--dataset"): a for a in commands if "data_prep.make_ft_lists" in a}
    for dataset, data in (("tid2013", "/data/tid2013"), ("mlive", "/my data/mlive")):
        if not (REPO / "data" / "ft" / dataset / "table.csv").is_file():  # made only when missing
            assert _value(lists[dataset], "--data") == data
            assert _value(lists[dataset], "--out") == f"data/ft/{dataset}"


def test_rank_accuracy_leaves_the_results_folder_to_the_command_unless_ra_out_names_one() -> None:
    plain = _tool(_commands("rank_accuracy", "MODEL=runs/x/rank_iter_200.caffemodel"), "tools.rank_accuracy")
    assert "--out" not in plain  # the command's own default: one folder per model, rank set and settings
    named = _tool(_commands("rank_accuracy", "MODEL=m.caffemodel", "RA_OUT=results/it's mine"),
                  "tools.rank_accuracy")
    assert _value(named, "--out") == "results/it's mine"


def test_every_variable_the_makefile_lets_a_user_set_is_in_the_readmes_table() -> None:
    settable = set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*\?=", (REPO / "Makefile").read_text(), re.MULTILINE))
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Make variables"):]
    table = table[:table.index("\n## ", 1)]
    assert settable, "no ?= variables found: the pattern no longer matches the Makefile"
    assert sorted(v for v in settable if f"`{v}`" not in table) == []


def _three_split_lists(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """A lists folder with the test.csv of splits 0-2 (header only), and make eval's variables for it."""
    lists = tmp_path / "it's my lists"
    for k in range(3):
        (lists / f"split{k}").mkdir(parents=True)
        (lists / f"split{k}" / "test.csv").write_text("reference,type,level,path,score,direction\n")
    return lists, ("SPLITS=3", "MODEL=m.caffemodel", "DATASET=kadid", f"FT_DIR={lists}")


def test_eval_with_splits_checks_the_lists_of_its_last_split(tmp_path: Path) -> None:
    lists, variables = _three_split_lists(tmp_path)
    (lists / "split2" / "test.csv").unlink()  # the last split's lists missing: they are made
    commands = _commands("eval", *variables)
    assert _value(_tool(commands, "data_prep.make_ft_lists"), "--out") == str(lists)
    argv = _tool(commands, "tools.evaluate")
    assert _value(argv, "--table") == f"{lists}/split{{split}}/test.csv" and _value(argv, "--splits") == "3"


@_NO_DEFAULT_KADID
def test_eval_with_splits_keeps_lists_that_every_split_has(tmp_path: Path) -> None:
    _, variables = _three_split_lists(tmp_path)
    assert not any("data_prep.make_ft_lists" in argv for argv in _commands("eval", *variables))


def test_rank_accuracy_and_demo_pass_paths_with_spaces_and_quotes_as_one_argument() -> None:
    model = "/tmp/my models/it's.caffemodel"
    deploy = "/tmp/my nets/it's_deploy.prototxt"
    ranks = "data/ranks/it's my set"
    argv = _tool(_commands("rank_accuracy", f"MODEL={model}", f"DEPLOY={deploy}", f"RANKS_DIR={ranks}"),
                 "tools.rank_accuracy")
    assert _value(argv, "--model") == model and _value(argv, "--deploy") == deploy
    assert _value(argv, "--ranks") == ranks
    default = _tool(_commands("rank_accuracy", f"MODEL={model}", "NET=shallow"), "tools.rank_accuracy")
    assert _value(default, "--deploy") == "prototxts/shallow/rank_deploy.prototxt"
    argv = _tool(_commands("demo", "PRISTINE=/my photos/it's here"), "tools.demo")
    assert _value(argv, "--pristine") == "/my photos/it's here"


def test_eval_with_a_table_of_ones_own_evaluates_it_and_makes_no_lists(tmp_path: Path) -> None:
    table = tmp_path / "my tables" / "it's mine.csv"
    commands = _commands("eval", "MODEL=m.caffemodel", f"TABLE={table}", f"FT_DIR={tmp_path / 'none'}",
                         "NET=shallow")
    assert not any("data_prep.make_ft_lists" in argv for argv in commands)
    argv = _tool(commands, "tools.evaluate")
    assert _value(argv, "--table") == str(table) and "--splits" not in argv
    assert _value(argv, "--out") == "results/it's_mine_shallow"  # RUN: the table's name and the net
    split_table = str(tmp_path / "split{split}.csv")
    argv = _tool(_commands("eval", "MODEL=m{split}.caffemodel", f"TABLE={split_table}", "SPLITS=3",
                           "NET=shallow"), "tools.evaluate")
    assert _value(argv, "--table") == split_table and _value(argv, "--splits") == "3"
    assert _value(argv, "--out") == "results/split_shallow"  # no literal {split} in the folder's name
    assert "--dataset" not in argv  # DATASET not given: the table's type codes are not read as TID2013's
    argv = _tool(_commands("eval", "MODEL=m.caffemodel", f"TABLE={table}", "DATASET=live"), "tools.evaluate")
    assert _value(argv, "--dataset") == "live"


def test_a_target_that_makes_its_lists_first_sets_up_caffe_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    command = ["make", "-n", "--no-print-directory", "finetune", "DATASET=tid2013", f"DATA={data}",
               f"FT_DIR={tmp_path / 'ft'}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "data_prep.make_ft_lists" in result.stdout  # the recursive make ran (dry) ...
    assert result.stdout.count("dev/build_caffe.sh |") == 1  # ... without the set-up of its own


def test_two_models_evaluated_on_one_dataset_get_a_results_folder_each() -> None:
    runs = {run: f"runs/{run}/snapshots/{run}_iter_9.caffemodel"
            for run in ("ft_tid2013_shallow_split0", "ft_tid2013_shallow_split0_scratch")}
    runs["it's_mine"] = "/my runs/it's mine/snapshots/m.caffemodel"  # a name made from a path: no space
    for run, model in runs.items():
        argv = _tool(_commands("eval", f"MODEL={model}", "FT_DIR=data/ft/tid2013"), "tools.evaluate")
        assert _value(argv, "--out") == f"results/{run}_on_tid2013"
        argv = _tool(_commands("eval", f"MODEL={model}", "TABLE=/t/mine.csv"), "tools.evaluate")
        assert _value(argv, "--out") == f"results/{run}_on_mine"
    split = "runs/ft_tid2013_shallow_split{split}/snapshots/ft_tid2013_shallow_split{split}_iter_9.caffemodel"
    argv = _tool(_commands("eval", f"MODEL={split}", "SPLITS=3", "FT_DIR=data/ft/tid2013"), "tools.evaluate")
    assert _value(argv, "--out") == "results/ft_tid2013_shallow_split_on_tid2013"
    # a model file elsewhere (e.g. a released one): the dataset's lists and the net, as before
    released = ("MODEL=/data/FT_tid2013.caffemodel", "FT_DIR=data/ft/tid2013", "NET=vgg16")
    argv = _tool(_commands("eval", *released), "tools.evaluate")
    assert _value(argv, "--out") == "results/tid2013_vgg16"
