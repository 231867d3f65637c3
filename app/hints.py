"""The one-line errors for a command line that is no command: a misspelt command
("did you mean 'predict'?"), or an image and predict's flags given without `predict`,
answered with the predict command line that was probably meant."""

import re
import shlex
from pathlib import Path

from app.cli import SUBCOMMANDS, build_parser


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")


def not_a_command(argv):
    """The error for a command line whose first word is no command: a misspelt command
    ("unknown command 'prdict'; did you mean 'predict'?"), or an image given without
    `predict`, answered with the predict command line made of the words predict accepts."""
    import difflib
    if is_image(argv[0]):
        return predict_hint(argv, argv)
    close = difflib.get_close_matches(argv[0], SUBCOMMANDS, n=1)
    if close:
        return f"unknown command {argv[0]!r}; did you mean {close[0]!r}?"
    return (f"unknown command {argv[0]!r}; the commands are {' and '.join(SUBCOMMANDS)}, and training needs "
            f"none: python nn.py [FLAGS] (see python nn.py --help)")


def is_image(word):
    """True when a command-line word names an image file (my_digit.png), by its suffix."""
    return not word.startswith("-") and Path(word).suffix.lower() in IMAGE_SUFFIXES


def is_flag(word):
    """True when a command-line word is a flag (--lr, -h), not a value: a negative number
    such as -0.1 is a value, as argparse takes it."""
    return word.startswith("-") and not re.fullmatch(r"-\.?\d.*", word)


def forgotten_predict(argv, unrecognized):
    """The error for training flags beside words that only predict takes ("--steps 100
    seven.png", "--model m.npz seven.png"): the predict command line, as not_a_command
    gives it for "seven.png" alone; None when no unrecognized word is an image or a
    flag of predict (a plain unrecognized argument)."""
    from app import predict
    predict_options = predict.build_parser()._option_string_actions
    if not any(is_image(word) or option_named(word, predict_options) not in (None, "-h", "--help")
               for word in unrecognized):
        return None
    return predict_hint(unrecognized, argv)


def predict_hint(unrecognized, argv):
    """'unrecognized arguments: ...; did you mean: python nn.py predict ...', the predict
    command line made of the words of argv that predict accepts (predict_words)."""
    kept, dropped = predict_words(argv)
    left_out = f" (predict takes no {', '.join(dropped)})" if dropped else ""
    return (f"unrecognized arguments: {' '.join(unrecognized)}; did you mean: python nn.py predict "
            f"{shlex.join(kept)}{left_out}")


def option_named(word, options):
    """The option string of `options` (an argparse table of them) that `word` names, in
    full or by the unique prefix argparse accepts ("--mod" or "--mod=m.npz" for "--model"), or None."""
    name = word.split("=")[0]
    if name in options:
        return name
    matches = [option for option in options if name.startswith("--") and option.startswith(name)]
    return matches[0] if len(matches) == 1 else None


def predict_words(argv):
    """(the words of argv that `nn.py predict` accepts, the training flags it does not):
    images and predict's own flags with their values are kept; a training flag is
    dropped with the values it takes."""
    from app import predict
    # argparse's table of option strings ("--model" -> its action, which knows its nargs)
    predict_options = predict.build_parser()._option_string_actions
    training_options = build_parser()._option_string_actions
    kept, dropped, words = [], [], list(argv)
    while words:
        word = words.pop(0)
        if word == "--":  # the words after it are no flags, for predict too: images, kept
            kept += ["--", *words] if any(rest.startswith("-") for rest in words) else words
            break
        name = word.split("=")[0]
        predict_option = option_named(word, predict_options)
        if predict_option:
            kept.append(predict_option + word[len(name):])  # in full: --mod=m.npz -> --model=m.npz
            if "=" not in word and predict_options[predict_option].nargs != 0 and words:
                kept.append(words.pop(0))
        elif is_flag(word):
            training_option = option_named(word, training_options)
            dropped.append(training_option or name)
            action = training_options.get(training_option)
            if action is None or "=" in word or action.nargs == 0:  # unknown, value attached, or a switch
                takes = 0
            elif action.nargs in (None, "?"):
                takes = 1
            else:  # nargs "*" (--hidden 150 150): every value up to the next flag or image
                takes = len(words)
            while takes and words and not is_flag(words[0]) and not is_image(words[0]):
                words.pop(0)
                takes -= 1
        else:
            kept.append(word)
    return kept, dropped


def parse_flags(argv):
    """(the parsed flags of a training run, None), or (None, the one-line error) for a
    command line that is no command, or one that gives an image or a flag of predict
    without `predict`. Any other flag that does not parse ends the program as argparse
    does (exit status 2, via cli.Parser.error)."""
    if argv and not argv[0].startswith("-"):  # training takes no word: a command misspelt or forgotten
        return None, not_a_command(argv)
    parser = build_parser()
    args, unrecognized = parser.parse_known_args(argv)
    if unrecognized:  # an image or a flag of predict, given without `predict`? else argparse's error
        hint = forgotten_predict(argv, unrecognized)
        if hint:
            return None, hint
        parser.error(f"unrecognized arguments: {' '.join(unrecognized)}")
    return args, None
