"""Numbers in messages: '1 image' and '2 images', never '1 images'; '>99.9 %', never '100.0 %';
'<0.1 %' for a chance that is small but there, never '0.0 %'."""

import math


def count(number, noun):
    """'1 column', '785 columns', '60,000 images': `number` (an int, with thousands
    separators) and `noun`, with the plural s whenever the number is not 1."""
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def confidence_text(probability):
    """'87.4 %' for 0.8746, '>99.9 %' from 0.999 up, '<0.1 %' under 0.001 but above 0: one
    decimal rounded down, so that a probability below 1 never reads as 100 % (0.9996 is not
    certainty), and one above 0 never reads as 0 % (a runner-up of 0.0004 is not impossible).
    Exactly 0 (a float32 that underflowed) reads '0.0 %'. The drawing page writes it the same
    way (confidenceText in app/page/web/app.js). NaN, the output of a model whose sums
    overflow (a Train run of the page can end so), reads '? %'."""
    if math.isnan(probability):  # math.floor would raise on it
        return "? %"
    if probability >= 0.999:
        return ">99.9 %"
    tenths = math.floor(1000 * float(probability) + 1e-9)  # 1e-9: 0.123 * 1000 is 122.99999...
    if tenths == 0 and probability > 0:
        return "<0.1 %"
    return f"{tenths / 10:.1f} %"
