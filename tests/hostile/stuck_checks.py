"""A check for the answer-checking pool's tests, in a module of its own: the workers import it by
name, and this one imports nothing heavy, so a replacement worker starts at once."""

import os


def never_ends(generation, reference, checker):
    """A check stuck inside C code, where no alarm interrupts it: an integer of 10^10 digits."""
    if generation == "hang":
        return pow(10, 10 ** 10) > 0
    if generation == "crash":
        os._exit(1)
    return generation == reference
