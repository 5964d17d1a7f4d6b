"""What only the book needs, apart from the library: ``from ddpm_lite import book``.

* exercise graders: :mod:`ddpm_lite.book.checks` (``book.checks.check_q_sample(my_q_sample)``);
* the book's digits model, trained once and cached: :func:`load_pretrained_digits`;
* the digit classifier and the Fréchet distance in its feature space: :func:`digits_fd`,
  :func:`real_vs_real_floor`, :func:`classify_digits`;
* the chapters' setup and language, glued numbers, figures and listings: :func:`setup_notebook` (``lang="zh_CN"``
  for the Chinese edition; :func:`language` reads it back), :func:`glue`, :func:`show`
  (``plt.show()`` once the figure is checked legible on the page), :func:`show_images`, :func:`animate_images`,
  :func:`show_source`, :func:`source_line`, :func:`draw_unet`.

``import ddpm_lite`` does not import this subpackage; ``ddpm_lite.book`` (or ``from ddpm_lite import book``)
does, on first use. Nothing here imports matplotlib until it draws.
"""
from . import checks, classifier
from .classifier import (
    DigitClassifier, classifier_accuracy, classify_digits, digit_features, digits_fd, digits_split,
    get_digit_classifier, real_vs_real_floor, train_digit_classifier,
)
from .plotting import (
    BOOK_URL, INSTALL_REQUIREMENT, LANGUAGES, REPOSITORY_URL, Bilingual, animate_images, colab_note, glue, image_grid,
    language, plain_roles, set_language, setup_notebook, show, show_images, show_source, smallest_text_pt,
    source_line,
)
from .pretrained import (
    load_pretrained_digits, pretrained_digits_configs, pretrained_digits_log, pretrained_digits_path,
)
from .unet_drawing import draw_unet, unet_layout

__all__ = [
    "checks",
    *classifier.__all__,
    "BOOK_URL",
    "INSTALL_REQUIREMENT",
    "LANGUAGES",
    "REPOSITORY_URL",
    "Bilingual",
    "animate_images",
    "colab_note",
    "glue",
    "image_grid",
    "language",
    "plain_roles",
    "set_language",
    "setup_notebook",
    "show",
    "show_images",
    "show_source",
    "smallest_text_pt",
    "source_line",
    "load_pretrained_digits",
    "pretrained_digits_configs",
    "pretrained_digits_log",
    "pretrained_digits_path",
    "draw_unet",
    "unet_layout",
]
