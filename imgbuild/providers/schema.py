"""Which request fields each image endpoint defines, as OpenAI publishes them.

Taken from OpenAI's OpenAPI description of its API, github.com/openai/openai-openapi, openapi.yaml
``info.version`` 2.3.0 (commit f85dbe223d40e1a31cba812ab2d755c7e98a92a3, 2026-08-21): the
properties of ``CreateImageRequest`` (``POST /images/generations``, JSON) and of
``CreateImageEditRequest`` (``POST /images/edits``, multipart; ``image`` and ``mask`` are file
parts). The AI/ML API's two endpoints for ``openai/gpt-image-2`` define a subset of each.

imgbuild uses them to send each known field only to the endpoint that defines it: ``moderation``
never goes with an edit (the multipart edit schema has no such field and a server that follows it
answers 400), ``input_fidelity`` never with a generation. A field that neither endpoint defines is
one this version does not know: ``extra`` sends it as it is.
"""

from __future__ import annotations

GENERATION_FIELDS = frozenset({
    "prompt", "model", "n", "quality", "response_format", "output_format", "output_compression",
    "stream", "partial_images", "size", "moderation", "background", "style", "user",
})
EDIT_FIELDS = frozenset({
    "image", "prompt", "mask", "background", "model", "n", "size", "response_format",
    "output_format", "output_compression", "user", "input_fidelity", "stream", "partial_images",
    "quality",
})
KNOWN_FIELDS = GENERATION_FIELDS | EDIT_FIELDS
# Fields that change the shape of the answer: `stream` and `partial_images` turn it into
# server-sent events, `response_format` into links or inline data other than what the preset
# handles. The answer is still paid for, and imgbuild could not read it.
ANSWER_SHAPE_FIELDS = frozenset({"stream", "partial_images", "response_format"})


def endpoint_name(edit: bool) -> str:
    return "images/edits" if edit else "images/generations"


def defined_elsewhere(field: str, *, edit: bool) -> bool:
    """True for a field the other endpoint defines and this one does not (e.g. ``input_fidelity``
    for a generation): it must not be sent here. Unknown fields are not "elsewhere"."""
    own = EDIT_FIELDS if edit else GENERATION_FIELDS
    return field in KNOWN_FIELDS and field not in own
