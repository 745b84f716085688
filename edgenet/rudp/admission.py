"""Whether a UVF receiver takes an offered file: the rules, in the order they are checked.

Pure functions of the offer, the options and what the caller knows (incoming transfers
running, free space), so they are tested without a disk or a socket. A refusal is
``(code, message)``: the ABORT the sender gets (docs/PROTOCOL.md, part 2, "ABORT codes").
"""

from __future__ import annotations

from . import names
from . import packet as pk
from .options import TransferOptions

Refusal = tuple[str, str]


def refuse_offer(
    offer: pk.Offer, options: TransferOptions, *, incoming: int, closing: bool
) -> Refusal | None:
    """The checks that need nothing from the disk; None when the offer passes them."""
    if closing:
        return "closed", "the receiver is shutting down"
    try:
        names.saved_name(offer.sender_name, offer.filename)
    except names.NameRefused as exc:
        return "bad_name", str(exc)
    if offer.size > options.max_file_size:
        return (
            "too_large",
            f"the file is {offer.size} bytes; the receiver accepts at most {options.max_file_size}",
        )
    if not pk.MIN_CHUNK_SIZE <= offer.chunk_size <= pk.MAX_CHUNK_SIZE:
        return "bad_offer", f"chunk size {offer.chunk_size} is not supported"
    if incoming >= options.max_incoming:
        return (
            "busy",
            f"the receiver already has {incoming} incoming transfers; try again later",
        )
    return None


def refuse_space(size: int, free_bytes: int | None) -> Refusal | None:
    """The free-space check (``free_bytes`` None: unknown, so the offer passes)."""
    if free_bytes is not None and size > free_bytes:
        return "no_space", "the receiver does not have room for the file"
    return None


def refuse_send(
    sender_name: str, filename: str, options: TransferOptions, *, outgoing: int, closing: bool
) -> Refusal | None:
    """The sender's own checks before it reads the file."""
    if closing:
        return "closed", "the transfer endpoint is closed"
    try:
        names.saved_name(sender_name, filename)
    except names.NameRefused as exc:
        return "bad_name", str(exc)
    if outgoing >= options.max_outgoing:
        return "busy", f"already sending {outgoing} files; try again later"
    return None
