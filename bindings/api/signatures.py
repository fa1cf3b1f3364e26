#!/usr/bin/env python3
"""Prints the public API of generated Kotlin or Swift bindings, one declaration per line.

The bindings are generated from the Rust library; this is what an app developer programs against.
bindings/check-api.sh compares it with the checked-in snapshot (bindings/api/*.api), so an API
change fails the tests until the snapshot is updated on purpose. Everything the generator needs
internally (FFI converters, checksums, handles, cleaners) is left out: it is not the apps' API and
changes with every uniffi release.

Usage: signatures.py kotlin|swift FILE
"""
import re
import sys

INTERNAL = re.compile(
    r"FfiConverter|Uniffi|uniffi|RustBuffer|RustCallStatus|ForeignBytes|Pointer|Cleaner|NoHandle|"
    r"\binternal\b|\bprivate\b|\bprotected\b|fileprivate|@_documentation|allocationSize|"
    r"\blift\b|\blower\b|\bread\(|\bwrite\(|Handle\b|handle:|destroy\(|interface Disposable|ErrorHandler|"
    r"\bcompanion\b|\bCompanion\b|callWithHandle|VTable|vtable|\bhashCode\b|\bequals\(|==|"
    r"errorDescription|ContractVersion|InitializationResult|\bdeinit\b|\bThreadSafe\b|"
    # Helpers of the generated runtime, not of Gridwork's API.
    r"\bcallback\(|Cleanable|\bclean\(|\brun\(\)|isSuccess|isError|isPanic|toUtf8|InternalException|"
    r"\bsize: Int\b|\binsert\(|\bclose\(\)|\bwithLock\b|\bdeallocate\b|^case (let |\.|\d|[A-Z_]+:)|"
    # Statements (assignments, lambdas) inside generated bodies.
    r" = |=$|\{ ->"
)

KOTLIN = re.compile(
    r"^(public )?(open |data |sealed |enum |abstract )*(class|interface|object|fun|var|val)\b|"
    r"^(override )?(fun|val|var) |^[A-Z_]+[,;]?$"
)
SWIFT = re.compile(r"^(public |open )(static )?(func|class|struct|enum|protocol|init|var|let|typealias|extension)\b|"
                   r"^case |^func |^init\(|^(public )?extension ")


# A declaration at the left margin opens a block; what is nested in it counts only if it counts.
TOP = re.compile(
    r"^(public |open |private |fileprivate |internal |final |data |sealed |enum |abstract )*"
    r"(class|struct|enum|protocol|extension|func|let|var|typealias|interface|object|fun|val)\b"
)


def joined(lines):
    """Swift's generator sometimes puts `public` alone on a line before the declaration."""
    pending = ""
    for raw in lines:
        if raw.strip() in ("public", "open"):
            pending = raw.strip() + " "
            continue
        yield pending + raw if pending else raw
        pending = ""


def declarations(language, lines):
    pattern = KOTLIN if language == "kotlin" else SWIFT
    out = []
    keep_block = True
    for raw in joined(lines):
        # Bodies go: a signature never contains a brace, and what follows one is code.
        raw = raw.split("{")[0].rstrip()
        # Swift's generator writes members at the margin too, but keeps helpers in blocks of
        # their own; Kotlin's indents top-level functions, so only Swift is read by blocks.
        if language == "swift" and raw[:1] not in (" ", "\t", "") and TOP.search(raw):
            keep_block = not INTERNAL.search(raw)
        elif not keep_block:
            continue
        line = raw.strip()
        # Annotations (@Throws, @discardableResult) go; the declaration after them stays.
        line = re.sub(r"^(@\w+(\([^)]*\))?\s*)+", "", line)
        if not line or line.startswith(("//", "*", "/*")):
            continue
        # A record field with a default value (`var `days`: kotlin.UInt = 30u,`) is API, default
        # included; other lines with " = " are statements in generated bodies.
        field_default = re.match(r"^(var|val) `\w+`: [\w.<>?, ]+ = [^=]+,?$", line)
        if pattern.search(line) and (field_default or not INTERNAL.search(line)):
            # Indentation of the generated file shows nesting (members, enum cases, sealed subclasses).
            indent = (len(raw) - len(raw.lstrip(" "))) // 4
            text = re.sub(r"\s+", " ", line).strip()
            out.append("    " * indent + text)
    return out


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("kotlin", "swift"):
        sys.exit(__doc__)
    with open(sys.argv[2], encoding="utf-8") as f:
        for line in declarations(sys.argv[1], f.read().splitlines()):
            print(line)


if __name__ == "__main__":
    main()
