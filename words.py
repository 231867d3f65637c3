"""Counts in messages: '1 image' and '2 images', never '1 images'."""


def count(number, noun):
    """'1 column', '785 columns', '60,000 images': `number` (an int, with thousands
    separators) and `noun`, with the plural s whenever the number is not 1."""
    return f"{number:,} {noun}" + ("" if number == 1 else "s")
