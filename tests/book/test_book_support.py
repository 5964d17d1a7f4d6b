"""ddpm_lite.book apart from the library: imported lazily; the cache in Colab's Drive; the device and progress bar."""
import dataclasses
import subprocess
import sys
import types

import pytest
import torch

import ddpm_lite
from ddpm_lite import _io
from ddpm_lite.book import classifier, pretrained
from ddpm_lite.diffusion import DiffusionConfig
from ddpm_lite.training import TrainConfig
from ddpm_lite.unet import UNetConfig

TINY = UNetConfig(base_channels=8, channel_mult=(1,), attention_resolutions=(), num_heads=1)
SHORT = DiffusionConfig(num_timesteps=100, data_bins=17)


def test_import_ddpm_lite_leaves_the_book_and_plotting_libraries_unimported():
    code = ("import sys, ddpm_lite; heavy = ('ddpm_lite.book', 'matplotlib', 'IPython', 'myst_nb', 'sklearn', "
            "'torchvision', 'scipy', 'skimage'); print(sorted({m for m in sys.modules if m.startswith(heavy)}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_book_is_an_attribute_on_first_use():
    from ddpm_lite import book

    assert ddpm_lite.book is book and book.checks.check_q_sample and book.load_pretrained_digits
    assert set(book.__all__) <= set(dir(book)) and set(ddpm_lite.__all__) <= set(dir(ddpm_lite))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        ddpm_lite.nonexistent


# ---------------------------------------------------------------------------------------------- the cache folder
@pytest.fixture
def colab(monkeypatch, tmp_path):
    """A stubbed Colab runtime (a ``google.colab`` module) whose Drive would be mounted at tmp_path/MyDrive."""
    monkeypatch.delenv("DDPM_LITE_CACHE", raising=False)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(_io, "COLAB_DRIVE", tmp_path / "MyDrive")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "MyDrive"


def test_in_colab_with_drive_mounted_the_cache_is_in_drive(colab):
    assert _io.default_cache_dir() == colab.parent / "home" / ".cache" / "ddpm_lite"  # Drive not mounted yet
    colab.mkdir()
    assert _io.default_cache_dir() == colab / "ddpm_lite_cache"
    assert pretrained.pretrained_digits_path(device="cpu").parent == colab / "ddpm_lite_cache" / "pretrained"


def test_the_environment_variable_wins_and_outside_colab_drive_is_ignored(colab, monkeypatch, tmp_path):
    colab.mkdir()
    monkeypatch.setenv("DDPM_LITE_CACHE", str(tmp_path / "mine"))
    assert _io.default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("DDPM_LITE_CACHE")
    monkeypatch.delitem(sys.modules, "google.colab")
    assert _io.default_cache_dir() == tmp_path / "home" / ".cache" / "ddpm_lite"


def test_the_digit_classifier_is_cached_in_drive_too(colab, monkeypatch):
    colab.mkdir()
    monkeypatch.setattr(classifier, "_classifier", None)
    quick = classifier.train_digit_classifier
    monkeypatch.setattr(classifier, "train_digit_classifier", lambda x, y: quick(x, y, steps=3))
    classifier.get_digit_classifier()
    assert (colab / "ddpm_lite_cache" / f"digit_classifier_v{classifier.CLASSIFIER_VERSION}.pt").is_file()


# ---------------------------------------------------------------------------------------------- device, progress
def test_the_cpu_model_keeps_its_cache_name(tmp_path):
    """The name of the CPU-trained model (PRETRAINED_VERSION 5, checkpoint format 2): a change
    would retrain every reader's cached model. Bump PRETRAINED_VERSION, and this name, when that is intended."""
    assert pretrained.pretrained_digits_path(tmp_path, device="cpu").name == "digits-fe3fbe3c1f537881.pt"
    assert pretrained.pretrained_digits_configs("cpu")[2].device == "cpu"


def test_the_conditional_model_is_the_same_recipe_with_labels_cached_apart(tmp_path):
    """The guidance chapter's model: the unconditional configs plus num_classes=10 and conditional training with the
    default label dropout, under its own cache name (the unconditional name is unchanged, test above)."""
    model_config, diffusion_config, train_config = pretrained.pretrained_digits_configs("cpu", conditional=True)
    plain = pretrained.pretrained_digits_configs("cpu")
    assert model_config == dataclasses.replace(plain[0], num_classes=10) and diffusion_config == plain[1]
    assert train_config == dataclasses.replace(plain[2], conditional=True) and train_config.label_dropout == 0.1
    path = pretrained.pretrained_digits_path(tmp_path, device="cpu", conditional=True)
    assert path.name.startswith("digits-conditional-") and path.parent == tmp_path / "pretrained"
    assert path.name != pretrained.pretrained_digits_path(tmp_path, device="cpu").name


def test_a_gpu_model_is_cached_apart_from_the_cpu_one(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # only configs and paths: nothing runs on it
    assert pretrained.pretrained_digits_configs("cuda:0")[2].device == "cuda"
    assert pretrained.pretrained_digits_configs()[2].device == "cuda"  # None: the GPU when there is one
    assert pretrained.pretrained_digits_path(tmp_path, "cuda") != pretrained.pretrained_digits_path(tmp_path, "cpu")


@pytest.fixture
def recorded_training(monkeypatch):
    """load_pretrained_digits with a 2-step tiny model, recording the device and progress flag it trains with."""
    def tiny_configs(device=None, conditional=False):
        return TINY, SHORT, TrainConfig(steps=2, batch_size=8, warmup_steps=1, device=pretrained._device_type(device))

    monkeypatch.setattr(pretrained, "pretrained_digits_configs", tiny_configs)
    calls = []
    real_train = pretrained.train

    def recording_train(model_config, diffusion_config, train_config, **kwargs):
        calls.append((train_config.device, kwargs["progress"]))
        return real_train(model_config, diffusion_config, train_config, **kwargs)

    monkeypatch.setattr(pretrained, "train", recording_train)
    return calls


@pytest.mark.parametrize("colab_runtime, progress, expected", [(False, None, False), (True, None, True),
                                                               (False, True, True), (True, False, False)])
def test_a_progress_bar_in_colab_or_when_asked_and_never_in_the_built_book(
        tmp_path, monkeypatch, recorded_training, colab_runtime, progress, expected):
    if colab_runtime:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    model, _ = pretrained.load_pretrained_digits(tmp_path, progress=progress, device="cpu")
    assert recorded_training == [("cpu", expected)]
    assert next(model.parameters()).device == torch.device("cpu")


def test_the_colab_note_names_the_device_the_cache_drive_and_the_chapters_page(colab, capsys):
    from ddpm_lite import book

    device = book.setup_notebook(seed=0, chapter="sampling")
    note = capsys.readouterr().out
    assert f"ddpm_lite {ddpm_lite.__version__} on {device.type}" in note
    assert "Change runtime type" in note  # no GPU here: the note says how to get one
    assert str(colab.parent / "home" / ".cache" / "ddpm_lite") in note and "drive.mount" in note
    assert "{eq}`name`" in note and "{cite}`key`" in note and "{glue:text}`name`" in note
    assert f"{book.BOOK_URL}/book/sampling.html" in note
    colab.mkdir()  # Drive mounted: the model is kept there
    assert "Google Drive is mounted" in book.colab_note(device, "sampling")


def test_outside_colab_the_setup_prints_nothing(monkeypatch, capsys):
    from ddpm_lite import book

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert book.setup_notebook(seed=0, chapter="sampling").type in ("cpu", "cuda")
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------------------------------- the language
@pytest.fixture
def english_afterwards():
    from ddpm_lite import book

    yield
    book.set_language("en")


def test_the_chinese_notebooks_setup_sets_the_language_and_links_the_chinese_page(colab, capsys, english_afterwards):
    from ddpm_lite import book

    device = book.setup_notebook(seed=0, chapter="sampling", lang="zh_CN")  # what book/zh/<chapter>.ipynb calls
    assert book.language() == "zh_CN"
    note = capsys.readouterr().out
    assert f"{book.BOOK_URL}/zh/book/sampling.html" in note and f"{book.BOOK_URL}/book/" not in note
    assert f"ddpm_lite {ddpm_lite.__version__}，运行于 {device.type}" in note
    assert "没有 GPU" in note and "Change runtime type" in note and "drive.mount" in note
    assert "{eq}`name`" in note and "{cite}`key`" in note and "{glue:text}`name`" in note
    chinese = sum("\u4e00" <= ch <= "\u9fff" for ch in note)
    assert chinese > 100  # the prose of the note is Chinese, not English with a Chinese word or two
    colab.mkdir()
    assert "Google Drive 已挂载" in book.colab_note(device, "sampling")
    assert book.colab_note(device, "sampling", lang="en").endswith(f"{book.BOOK_URL}/book/sampling.html")
    assert book.colab_note(device, None).endswith(f"{book.BOOK_URL}/zh/")
    book.setup_notebook(seed=0, chapter="sampling")  # the English edition's setup sets English again
    assert book.language() == "en" and f"{book.BOOK_URL}/book/sampling.html" in capsys.readouterr().out


@pytest.mark.parametrize("lang", ["zh", "de", "", None])
def test_an_unknown_language_is_refused_in_one_line_naming_the_valid_ones(lang, english_afterwards):
    from ddpm_lite import book

    with pytest.raises(ValueError) as error:
        book.setup_notebook(seed=0, lang=lang)
    message = str(error.value)
    assert "\n" not in message and "'en'" in message and "'zh_CN'" in message
    assert book.language() == "en"  # the setting is unchanged
