#!/usr/bin/env python3
"""Generates the Unicode and HTML data tables of the CLIP tokenizer (developer tool).

    python3 lua/tools/gen_unicode.py          # from the repository root

writes lua/sd/unicode.lua and lua/sd/html_entities.lua. Only the Python 3 standard library is
used (unicodedata, html, html.entities), so the tables describe exactly what the Python that
runs the generator does: its Unicode version (unicodedata.unidata_version) is written into the
header of both files. The reference tokenizer (openai/CLIP simple_tokenizer.py under Python
3.11, Unicode 14.0.0) is matched when this script runs under a Python with the same Unicode
version.

The tables are compact strings (hexadecimal code point ranges) that lua/sd/tokenizer.lua
parses lazily on first use.
"""
import html
import html.entities
import os
import sys
import unicodedata

MAXCP = 0x110000
SURROGATES = range(0xD800, 0xE000)

# Code points that the `regex` module, with IGNORECASE, matches with none of [\p{L}]+,
# [\p{N}] and [^\s\p{L}\p{N}]+ (so CLIP's findall drops them like whitespace). This cannot be
# derived with the standard library; it was found by testing every code point against the
# `regex` module (U+0345 COMBINING GREEK YPOGEGRAMMENI: a mark whose case partner is a letter).
REGEX_IGNORECASE_UNMATCHED = [0x345]


def all_chars():
    for cp in range(MAXCP):
        if cp in SURROGATES:
            continue
        yield cp, chr(cp)


def ranges(pred):
    """Sorted inclusive ranges [(a, b)] of the code points where pred(cp, ch) holds."""
    out = []
    for cp, ch in all_chars():
        if pred(cp, ch):
            if out and out[-1][1] == cp - 1:
                out[-1][1] = cp
            else:
                out.append([cp, cp])
    return out


def fmt_ranges(rs):
    return ",".join("%x" % a if a == b else "%x-%x" % (a, b) for a, b in rs)


def fmt_valued_ranges(pairs):
    """pairs: sorted [(cp, value)] -> "a-b:v" runs of consecutive code points sharing a value."""
    runs = []
    for cp, v in pairs:
        if runs and runs[-1][1] == cp - 1 and runs[-1][2] == v:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp, v])
    return ",".join(("%x" % a if a == b else "%x-%x" % (a, b)) + ":" + str(v) for a, b, v in runs)


def lua_long_string(name, s, width=100, sep=","):
    """A Lua field `name = [[...]]` (a long string) split into lines of about `width` characters
    after a separator; the Lua parsers ignore the line breaks."""
    lines = []
    while s:
        cut = min(len(s), width)
        if cut < len(s):
            at = s.rfind(sep, 0, cut)
            if at > 0:
                cut = at + 1
        lines.append(s[:cut])
        s = s[cut:]
    assert "]]" not in "".join(lines)
    return "  %s = [[\n%s]],\n" % (name, "\n".join(lines))


def lower_table():
    """str.lower as runs: "a-b/step:delta" (single code point results) and specials."""
    single, special = [], []
    for cp, ch in all_chars():
        lo = ch.lower()
        if lo == ch:
            continue
        if len(lo) == 1:
            single.append((cp, ord(lo) - cp))
        else:
            special.append((cp, [ord(c) for c in lo]))
    runs = []  # [start, end, step, delta]
    for cp, d in single:
        if runs:
            r = runs[-1]
            if r[3] == d and r[0] == r[1] and cp - r[1] in (1, 2):
                r[2] = cp - r[1]
                r[1] = cp
                continue
            if r[3] == d and r[0] != r[1] and cp - r[1] == r[2]:
                r[1] = cp
                continue
        runs.append([cp, cp, 1, d])
    out = []
    for a, b, step, d in runs:
        key = "%x" % a if a == b else ("%x-%x" % (a, b) if step == 1 else "%x-%x/%d" % (a, b, step))
        out.append("%s:%d" % (key, d))
    specials = ",".join("%x:%s" % (cp, " ".join("%x" % c for c in lo)) for cp, lo in special)
    # self-check: expanding the runs gives str.lower back
    check = {}
    for a, b, step, d in runs:
        for cp in range(a, b + 1, step):
            check[cp] = cp + d
    assert len(check) == len(single) and all(check[cp] == cp + d for cp, d in single)
    return ",".join(out), specials


def sigma_context():
    """Final_Sigma context of str.lower, measured on str.lower itself.

    CPython lowers U+03A3 to U+03C2 when the nearest preceding code point that is not
    case-ignorable is cased and the nearest following one is not (or there is none).
    'A'+X+'Σ' gives the final form iff X is case-ignorable or cased; X+'Σ' iff X is cased and
    not case-ignorable. Cased is only ever asked of code points that are not case-ignorable.
    """
    ignorable, cased = [], []
    for cp, ch in all_chars():
        t1 = ("A" + ch + "\u03a3").lower()[-1] == "\u03c2"
        t2 = (ch + "\u03a3").lower()[-1] == "\u03c2"
        if t1 and not t2:
            ignorable.append(cp)
        if t2:
            cased.append(cp)
    return ignorable, cased


def to_ranges(cps):
    out = []
    for cp in cps:
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def nfc_tables():
    decomp, excluded, ccc = [], [], []
    seconds = set()
    for cp, ch in all_chars():
        c = unicodedata.combining(ch)
        if c:
            ccc.append((cp, c))
        d = unicodedata.decomposition(ch)
        if d and not d.startswith("<"):
            parts = [int(x, 16) for x in d.split()]
            decomp.append((cp, parts))
            if len(parts) == 2:
                if unicodedata.normalize("NFC", ch) != ch:
                    excluded.append(cp)
                else:
                    seconds.add(parts[1])
    # Hangul syllables decompose and compose algorithmically (not in the table); their jamo
    # vowels and trailing consonants combine with a preceding code point.
    for cp in list(range(0x1161, 0x1176)) + list(range(0x11A8, 0x11C3)):
        seconds.add(cp)

    def unsafe(cp, ch):
        # the string needs the full NFC algorithm when it holds one of these
        return (unicodedata.combining(ch) != 0 or cp in seconds
                or unicodedata.normalize("NFC", ch) != ch)

    dec = ",".join("%x:%s" % (cp, " ".join("%x" % p for p in parts)) for cp, parts in decomp)
    return (dec, ",".join("%x" % cp for cp in excluded), fmt_valued_ranges(ccc),
            fmt_ranges(ranges(unsafe)))


def header(what):
    return ("-- GENERATED by lua/tools/gen_unicode.py -- do not edit.\n"
            "-- %s\n"
            "-- Unicode %s (Python %s unicodedata); see docs/tokenizer.md.\n"
            % (what, unicodedata.unidata_version, sys.version.split()[0]))


def gen_unicode(path):
    cat = unicodedata.category
    L = ranges(lambda cp, ch: cat(ch)[0] == "L")
    N = ranges(lambda cp, ch: cat(ch)[0] == "N")
    M = ranges(lambda cp, ch: cat(ch)[0] == "M")
    S = ranges(lambda cp, ch: ch.isspace())
    D = ranges(lambda cp, ch: cat(ch) == "Nd")
    for a, b in D:  # decimal digits come in runs of ten, 0..9 (the weight parser relies on it)
        assert all(unicodedata.decimal(chr(cp)) == (cp - a) % 10 for cp in range(a, b + 1))
    lower_runs, lower_special = lower_table()
    ignorable, cased = sigma_context()
    dec, excl, ccc, unsafe = nfc_tables()
    out = [header("Unicode data for the CLIP tokenizer's text cleaning and pre-tokenizer split."),
           "-- Range lists are comma separated hexadecimal code points or a-b ranges (inclusive).\n",
           "return {\n",
           '  unicode_version = "%s",\n' % unicodedata.unidata_version,
           "  -- general categories L* (letters), N* (numbers), M* (marks)\n",
           lua_long_string("letter", fmt_ranges(L)),
           lua_long_string("number", fmt_ranges(N)),
           lua_long_string("mark", fmt_ranges(M)),
           "  -- Nd (decimal digits, in runs of ten from 0 to 9): Python's re \\d and float()\n",
           lua_long_string("decimal", fmt_ranges(D)),
           "  -- str.isspace() (also what Python's re \\s matches in str patterns)\n",
           lua_long_string("space", fmt_ranges(S)),
           "  -- matched by no alternative of CLIP's pattern under regex.IGNORECASE (dropped)\n",
           lua_long_string("regex_unmatched", ",".join("%x" % c for c in REGEX_IGNORECASE_UNMATCHED)),
           "  -- str.lower: a-b/step:delta runs (step 1 when absent) and multi-code-point results\n",
           lua_long_string("lower", lower_runs),
           lua_long_string("lower_special", lower_special),
           "  -- Final_Sigma context of str.lower (U+03A3 -> U+03C2)\n",
           lua_long_string("case_ignorable", fmt_ranges(to_ranges(ignorable))),
           lua_long_string("cased", fmt_ranges(to_ranges(cased))),
           "  -- NFC: canonical combining classes (a-b:ccc), one-level canonical decompositions\n",
           "  -- (cp:parts), two-part decompositions that do not recompose, and the code points\n",
           "  -- whose presence means a string may change under NFC\n",
           lua_long_string("ccc", ccc),
           lua_long_string("decomposition", dec),
           lua_long_string("composition_exclusions", excl),
           lua_long_string("nfc_unsafe", unsafe),
           "}\n"]
    with open(path, "w", encoding="ascii") as f:
        f.write("".join(out))


def gen_entities(path):
    h5 = html.entities.html5
    semi = sorted(k for k in h5 if k.endswith(";"))
    legacy = sorted(k for k in h5 if not k.endswith(";"))
    for k in legacy:
        assert h5[k + ";"] == h5[k], k
    named = " ".join(k + ".".join("%x" % ord(c) for c in h5[k]) for k in semi)
    inv = ",".join("%x:%s" % (n, ".".join("%x" % ord(c) for c in v))
                   for n, v in sorted(html._invalid_charrefs.items()))
    invcp = fmt_ranges(to_ranges(sorted(html._invalid_codepoints)))
    out = [header("HTML5 named character references and numeric reference rules of html.unescape."),
           "-- named: `name;` followed by the hexadecimal code point(s) of its value, '.' separated.\n",
           "-- legacy: names that html.unescape also accepts without the ';' (same value).\n",
           "-- invalid_charrefs: numeric references replaced by another character (n:value).\n",
           "-- invalid_codepoints: numeric references that produce nothing.\n",
           "return {\n",
           lua_long_string("named", named, sep=" "),
           lua_long_string("legacy", " ".join(legacy), sep=" "),
           lua_long_string("invalid_charrefs", inv),
           lua_long_string("invalid_codepoints", invcp),
           "}\n"]
    with open(path, "w", encoding="ascii") as f:
        f.write("".join(out))


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    gen_unicode(os.path.join(root, "lua", "sd", "unicode.lua"))
    gen_entities(os.path.join(root, "lua", "sd", "html_entities.lua"))
    print("wrote lua/sd/unicode.lua and lua/sd/html_entities.lua (Unicode %s)"
          % unicodedata.unidata_version)


if __name__ == "__main__":
    main()
