"""Recipient numbers and the toll-fraud policy (README "Sending a fax"; docs/RELIABILITY.md A15,
B4, S3, S6).

The words a sender sees are asserted exactly; the safety properties (ASCII digits only,
idempotent normalisation, built-in classes stay blocked, deny beats allow, the lenient provider
normaliser never raises) are checked with hypothesis.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from bridge import replies
from bridge.errors import BridgeError
from bridge.numbers import (
    BUILTIN_DENY,
    MAX_DIGITS,
    MIN_DIGITS,
    NumberError,
    NumberPolicy,
    check_policy,
    parse_local_part,
    to_international,
)

TR = "90"
JP = "81"
EXAMPLE_TR = "like 02122222525 or +902122222525"
NORMALISED = re.compile(rf"[1-9][0-9]{{{MIN_DIGITS - 1},{MAX_DIGITS - 1}}}", re.ASCII)
SYNTAX = (550, "5.1.3")
NOT_A_NUMBER = (550, "5.1.1")
DENIED = (550, "5.7.1")


def refusal(local: str, country: str = TR) -> NumberError:
    with pytest.raises(NumberError) as info:
        parse_local_part(local, default_country_code=country)
    return info.value


def denial(number: str, policy: NumberPolicy) -> NumberError:
    with pytest.raises(NumberError) as info:
        check_policy(number, policy)
    return info.value


def assert_wire_safe(err: NumberError) -> None:
    """aiosmtpd sends replies as ASCII; a CR or LF would end the reply line early."""
    assert err.words.isascii()
    assert "\r" not in err.words and "\n" not in err.words
    assert str(err) == err.words
    assert err.reply == f"{err.code} {err.enhanced} {err.words}"


# --------------------------------------------------------------------------------------------
# Accepted forms


@pytest.mark.parametrize(
    "local",
    [
        "+902122222525",
        "00902122222525",
        "02122222525",
        "0212-222-2525",
        "0212.222.2525",
        "(0212)2222525",
        "902122222525",
        "+90-212-222-25-25",
        "+(90)2122222525",
        "0090.212.222.2525",
        "(0212)-222-2525",
    ],
)
def test_design_forms_normalise_to_faxmax_form(local: str) -> None:
    assert parse_local_part(local, default_country_code=TR) == "902122222525"


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("0368680000", "81368680000"),
        ("03-6868-0000", "81368680000"),
        ("+81-3-6868-0000", "81368680000"),
        ("0081368680000", "81368680000"),
        ("81368680000", "81368680000"),
    ],
)
def test_japanese_forms(local: str, expected: str) -> None:
    assert parse_local_part(local, default_country_code=JP) == expected


def test_length_bounds_are_inclusive() -> None:
    assert parse_local_part("1234567", default_country_code=TR) == "1234567"
    assert parse_local_part("123456789012345", default_country_code=TR) == "123456789012345"


def test_bad_default_country_code_is_the_operators_error_not_the_senders() -> None:
    for bad in ("", "090", "+90", "1234", "９０", "9a"):
        with pytest.raises(ValueError, match="default_country_code") as info:
            parse_local_part("02122222525", default_country_code=bad)
        assert not isinstance(info.value, NumberError)


# --------------------------------------------------------------------------------------------
# Refusals: exact words and codes


@pytest.mark.parametrize(
    ("local", "code", "message"),
    [
        (
            "",
            SYNTAX,
            f"an empty address is not a fax number: use digits, {EXAMPLE_TR}",
        ),
        (
            '"02122222525"',
            SYNTAX,
            f"'\"02122222525\"' is a quoted address: write the fax number without quotes, "
            f"{EXAMPLE_TR}",
        ),
        (
            '"0212 222 2525"',
            SYNTAX,
            f"'\"0212 222 2525\"' is a quoted address: write the fax number without quotes, "
            f"{EXAMPLE_TR}",
        ),
        (
            "0312345678%evil.example",
            SYNTAX,
            "'0312345678%evil.example' contains '%', which could route mail elsewhere: "
            "only a fax number may stand before the @",
        ),
        (
            "0312345678@evil.example",
            SYNTAX,
            "'0312345678@evil.example' contains '@', which could route mail elsewhere: "
            "only a fax number may stand before the @",
        ),
        (
            "evil!0312345678",
            SYNTAX,
            "'evil!0312345678' contains '!', which could route mail elsewhere: "
            "only a fax number may stand before the @",
        ),
        (
            "@a,@b:0312345678",
            SYNTAX,
            "'@a,@b:0312345678' contains '@', which could route mail elsewhere: "
            "only a fax number may stand before the @",
        ),
        (
            "a,b",
            SYNTAX,
            "'a,b' contains ',', which could route mail elsewhere: "
            "only a fax number may stand before the @",
        ),
        (
            "b:0312345678",
            SYNTAX,
            "'b:0312345678' contains ':', which could route mail elsewhere: "
            "only a fax number may stand before the @",
        ),
        (
            "0212;2222525",
            SYNTAX,
            "'0212;2222525' contains ';', which is not allowed in an address: "
            "write only the fax number before the @",
        ),
        (
            "0212\\2222525",
            SYNTAX,
            "'0212\\\\2222525' contains '\\\\', which is not allowed in an address: "
            "write only the fax number before the @",
        ),
        (
            "0212 222 2525",
            SYNTAX,
            "'0212 222 2525' contains spaces or control characters: "
            "write only the fax number before the @",
        ),
        (
            "02122222525\r\nRCPT TO:<x@evil.example>",
            SYNTAX,
            "'02122222525\\r\\nRCPT TO:<x@evil.example>' contains spaces or control "
            "characters: write only the fax number before the @",
        ),
        (
            "0212\t2222525",
            SYNTAX,
            "'0212\\t2222525' contains spaces or control characters: "
            "write only the fax number before the @",
        ),
        (
            "0212\x002222525",
            SYNTAX,
            "'0212\\x002222525' contains spaces or control characters: "
            "write only the fax number before the @",
        ),
        (
            "0212\u200b2222525",
            SYNTAX,
            "'0212\\u200b2222525' contains spaces or control characters: "
            "write only the fax number before the @",
        ),
        (
            "０２１２２２２２５２５",
            SYNTAX,
            "'\\uff10\\uff12\\uff11\\uff12\\uff12\\uff12...' contains U+FF10 FULLWIDTH DIGIT "
            "ZERO: type the number with the ASCII digits 0-9",
        ),
        (
            "0212222252٥",
            SYNTAX,
            "'0212222252\\u0665' contains U+0665 ARABIC-INDIC DIGIT FIVE: "
            "type the number with the ASCII digits 0-9",
        ),
        (
            "0212२222525",
            SYNTAX,
            "'0212\\u0968222525' contains U+0968 DEVANAGARI DIGIT TWO: "
            "type the number with the ASCII digits 0-9",
        ),
        (
            "02122222525²",
            SYNTAX,
            "'02122222525\\xb2' contains U+00B2 SUPERSCRIPT TWO: "
            "type the number with the ASCII digits 0-9",
        ),
        (
            "sales",
            NOT_A_NUMBER,
            f"'sales' is not a fax number: use digits, {EXAMPLE_TR}",
        ),
        (
            "12ab",
            NOT_A_NUMBER,
            f"'12ab' is not a fax number: use digits, {EXAMPLE_TR}",
        ),
        (
            "0212_2222525",
            NOT_A_NUMBER,
            f"'0212_2222525' is not a fax number: use digits, {EXAMPLE_TR}",
        ),
        (
            "İzmir",
            NOT_A_NUMBER,
            f"'\\u0130zmir' is not a fax number: use digits, {EXAMPLE_TR}",
        ),
        (
            "+",
            NOT_A_NUMBER,
            f"'+' is not a fax number: use digits, {EXAMPLE_TR}",
        ),
        (
            "()-.",
            NOT_A_NUMBER,
            f"'()-.' is not a fax number: use digits, {EXAMPLE_TR}",
        ),
        (
            "0212+2222525",
            SYNTAX,
            f"'0212+2222525' has a '+' after the start: '+' may only begin the number, "
            f"{EXAMPLE_TR}",
        ),
        (
            "++902122222525",
            SYNTAX,
            f"'++902122222525' has a '+' after the start: '+' may only begin the number, "
            f"{EXAMPLE_TR}",
        ),
        (
            "(0212(222)2525",
            SYNTAX,
            f"'(0212(222)2525' has unbalanced parentheses: write the number {EXAMPLE_TR}",
        ),
        (
            "0212)2222525(",
            SYNTAX,
            f"'0212)2222525(' has unbalanced parentheses: write the number {EXAMPLE_TR}",
        ),
        (
            "+02122222525",
            SYNTAX,
            f"'+02122222525' has a 0 right after the '+': the country code comes next, "
            f"{EXAMPLE_TR}",
        ),
        (
            "0002122222525",
            SYNTAX,
            "'0002122222525' has a 0 right after the international prefix 00: "
            f"the country code comes next, {EXAMPLE_TR}",
        ),
        (
            "02122",  # 902122: 6 digits
            NOT_A_NUMBER,
            "'02122' is too short for a fax number: write the whole number with its area "
            f"code, {EXAMPLE_TR}",
        ),
        (
            "112",
            NOT_A_NUMBER,
            "'112' is too short for a fax number: write the whole number with its area "
            f"code, {EXAMPLE_TR}",
        ),
        (
            "1234567890123456",
            NOT_A_NUMBER,
            "'1234567890123456' is too long for a fax number: at most 15 digits with the "
            "country code",
        ),
        (
            "0212222252512345",  # 15 national digits + "90" = 17
            NOT_A_NUMBER,
            "'0212222252512345' is too long for a fax number: at most 15 digits with the "
            "country code",
        ),
    ],
)
def test_refusals_have_exact_words_and_codes(
    local: str, code: tuple[int, str], message: str
) -> None:
    err = refusal(local)
    assert (err.code, err.enhanced) == code
    assert err.words == message
    assert_wire_safe(err)


def test_long_local_part_is_quoted_with_a_cap() -> None:
    err = refusal("x" * 5000)
    assert err.words == f"'{'x' * 40}...' is not a fax number: use digits, {EXAMPLE_TR}"
    err = refusal("\r\n" * 500)
    assert err.words.startswith("'" + "\\r\\n" * 10 + "...' contains spaces")
    assert_wire_safe(err)


def test_examples_follow_the_country_of_the_gateway() -> None:
    assert refusal("fax", JP).words == (
        "'fax' is not a fax number: use digits, like 0368680000 or +81368680000"
    )
    assert refusal("fax", "49").words == (
        "'fax' is not a fax number: use digits, like +49 and the number, "
        "or the national number with its leading 0"
    )


def test_number_error_is_a_value_error_and_a_bridge_error() -> None:
    err = NumberError(replies.NOT_A_NUMBER, local="'x'", example=EXAMPLE_TR)
    assert isinstance(err, ValueError)
    assert isinstance(err, BridgeError)
    words = f"'x' is not a fax number: use digits, {EXAMPLE_TR}"
    assert (err.words, err.code, err.enhanced) == (words, 550, "5.1.1")
    assert err.reply == f"550 5.1.1 {words}"


@pytest.mark.parametrize("special", ["110", "118", "119", "117", "104", "171"])
def test_japanese_1xy_specials_are_too_short_in_every_spelling(special: str) -> None:
    for local in (special, "0" + special, "+81" + special, "0081" + special, "81" + special):
        err = refusal(local, JP)
        assert (err.code, err.enhanced) == NOT_A_NUMBER
        assert "too short" in err.words


# --------------------------------------------------------------------------------------------
# Policy


def policy(home: str = TR, allow: tuple[str, ...] = (), deny: tuple[str, ...] = ()) -> NumberPolicy:
    return NumberPolicy.from_config(home_country=home, allow=allow, deny=deny)


def test_home_country_numbers_pass() -> None:
    check_policy("902122222525", policy())
    check_policy("905321234567", policy())
    check_policy("81368680000", policy(JP))


@pytest.mark.parametrize(
    ("local", "message"),
    [
        (
            "09001234567",
            "'+909001234567' is a premium-rate number (0900); "
            "this gateway does not fax premium-rate numbers",
        ),
        (
            "08981234567",
            "'+908981234567' is a premium-rate number (0898); "
            "this gateway does not fax premium-rate numbers",
        ),
        (
            "08881234567",
            "'+908881234567' is a premium-rate number (0888); "
            "this gateway does not fax premium-rate numbers",
        ),
        (
            "04441234",
            "'+904441234' is a national short number (444 xxxx); "
            "this gateway does not fax national short numbers",
        ),
        (
            "+904441234",
            "'+904441234' is a national short number (444 xxxx); "
            "this gateway does not fax national short numbers",
        ),
        (
            "+901121234567",
            "'+901121234567' is a short-code or carrier-select number (1XY or 10XY after +90); "
            "this gateway does not fax short-code or carrier-select numbers",
        ),
        (
            "+9002122222525",
            "'+9002122222525' is a malformed number (a 0 after +90); "
            "this gateway does not fax malformed numbers",
        ),
    ],
)
def test_turkish_builtin_classes_are_refused(local: str, message: str) -> None:
    err = denial(parse_local_part(local, default_country_code=TR), policy())
    assert (err.code, err.enhanced) == DENIED
    assert err.words == message
    assert_wire_safe(err)


@pytest.mark.parametrize(
    ("local", "message"),
    [
        (
            "010-1-212-555-0100",
            "'+811012125550100' is an international-prefix number (010); "
            "this gateway does not fax international-prefix numbers",
        ),
        (
            "+81-010-1-212-5550",
            "'+8101012125550' is an international-prefix number (010 after +81); "
            "this gateway does not fax international-prefix numbers",
        ),
        (
            "+81-0033-44-20-7946",
            "'+81003344207946' is a carrier-select number (00XY after +81); "
            "this gateway does not fax carrier-select numbers",
        ),
        (
            "+81-03-6868-0000",
            "'+810368680000' is a malformed number (a 0 after +81); "
            "this gateway does not fax malformed numbers",
        ),
        (
            "0570-012-345",
            "'+81570012345' is a Navi Dial number (0570); "
            "this gateway does not fax Navi Dial numbers",
        ),
        (
            "0180-993-456",
            "'+81180993456' is a televoting number (0180); "
            "this gateway does not fax televoting numbers",
        ),
        (
            "0990-123-456",
            "'+81990123456' is a premium-rate number (0990 Dial Q2); "
            "this gateway does not fax premium-rate numbers",
        ),
        (
            "020-4123-4567",
            "'+812041234567' is a pager or M2M number (020); "
            "this gateway does not fax pager or M2M numbers",
        ),
    ],
)
def test_japanese_builtin_classes_are_refused(local: str, message: str) -> None:
    err = denial(parse_local_part(local, default_country_code=JP), policy(JP))
    assert (err.code, err.enhanced) == DENIED
    assert err.words == message


def test_japanese_carrier_select_written_alone_leaves_japan_and_is_refused() -> None:
    # "0033" is read as the international prefix 00, so the carrier code becomes a country code
    # (33, France) and the home-country rule refuses it.
    number = parse_local_part("0033-010-44-20-7946", default_country_code=JP)
    assert number == "3301044207946"
    err = denial(number, policy(JP))
    assert err.words == f"'+{number}' is outside Japan (+81); ask the administrator to allow it"
    # Same for KDDI's 001 + 010 international access.
    number = parse_local_part("001-010-1-212-5550", default_country_code=JP)
    assert number == "101012125550"
    assert "outside Japan (+81)" in denial(number, policy(JP)).words


def test_builtin_lists_of_other_countries_apply_too() -> None:
    # A Turkish gateway whose operator allows Japan still refuses Japan's premium-rate numbers.
    err = denial("81990123456", policy(TR, allow=("81",)))
    assert "premium-rate number (0990 Dial Q2)" in err.words
    check_policy("81368680000", policy(TR, allow=("81",)))


def test_outside_home_country() -> None:
    err = denial("441234567890", policy())
    assert err.words == (
        "'+441234567890' is outside Turkey (+90); ask the administrator to allow it"
    )
    err = denial("902122222525", policy("998"))
    assert err.words == (
        "'+902122222525' is outside this gateway's home country (+998); "
        "ask the administrator to allow it"
    )


def test_operator_deny_and_allow() -> None:
    p = policy(allow=("+44", "+90 900 123"), deny=("90 212",))
    err = denial("902122222525", p)
    assert err.words == "'+902122222525' is blocked by this gateway's deny list"
    assert (err.code, err.enhanced) == DENIED
    check_policy("902162222525", p)
    check_policy("441234567890", p)
    check_policy("909001234567", p)  # explicitly unblocked built-in class
    assert "premium-rate" in denial("909009999999", p).words  # only that block


def test_allow_must_be_as_specific_as_the_builtin_entry_it_unblocks() -> None:
    assert "premium-rate" in denial("909001234567", policy(allow=("90",))).words
    assert "premium-rate" in denial("909001234567", policy(allow=("9090",))).words
    check_policy("909001234567", policy(allow=("90900",)))


def test_check_policy_refuses_unnormalised_input() -> None:
    for raw in ("+909001234567", "09001234567", "", "９０９００", "90 900"):
        with pytest.raises(ValueError, match="normalised number") as info:
            check_policy(raw, policy())
        assert not isinstance(info.value, NumberError)


def test_from_config_normalises_and_deduplicates() -> None:
    p = NumberPolicy.from_config(
        home_country="+90",
        allow=["+44", " 44 ", "+90 (212) 222", "0033"],
        deny=["90-900", "90.898"],
    )
    assert p == NumberPolicy(
        home_country="90", allow=("44", "90212222", "33"), deny=("90900", "90898")
    )


@pytest.mark.parametrize(
    ("allow", "deny", "words"),
    [
        (["4a"], [], "numbers.allow: '4a' is not a number prefix"),
        ([], ["0212"], "numbers.deny: '0212' is not a number prefix"),
        ([""], [], "numbers.allow: '' is not a number prefix"),
        (["+"], [], "numbers.allow: '+' is not a number prefix"),
        (["４４"], [], "numbers.allow: '\\uff14\\uff14' is not a number prefix"),
        (["44+"], [], "numbers.allow: '44+' is not a number prefix"),
        ("44", [], "numbers.allow: expected a list of prefixes, got the string '44'"),
    ],
)
def test_from_config_names_the_bad_entry(allow: list[str], deny: list[str], words: str) -> None:
    with pytest.raises(ValueError) as info:
        NumberPolicy.from_config(home_country="90", allow=allow, deny=deny)
    assert str(info.value).startswith(words)


def test_policy_refuses_bad_home_country_and_raw_prefixes() -> None:
    with pytest.raises(ValueError, match=r"numbers\.default_country_code"):
        NumberPolicy.from_config(home_country="090", allow=[], deny=[])
    with pytest.raises(
        ValueError, match=re.escape("numbers.allow: '+44' is not a normalised prefix")
    ):
        NumberPolicy(home_country="90", allow=("+44",))


def test_builtin_deny_shape() -> None:
    assert set(BUILTIN_DENY) >= {TR, JP}
    for cc, entries in BUILTIN_DENY.items():
        assert entries
        for prefix, cls in entries:
            assert prefix.startswith(cc) and prefix.isascii() and prefix.isdigit()
            assert cls and cls.isascii()
    prefixes = {p for entries in BUILTIN_DENY.values() for p, _ in entries}
    assert {"90900", "90898", "90888", "90444"} <= prefixes
    assert {"8110", "81570", "81180", "81990", "8120", "810"} <= prefixes


def test_builtin_lists_spare_ordinary_numbers() -> None:
    # Landlines, mobiles, toll-free and 0850 in Turkey; Tokyo, Osaka, Sapporo, Akita, Aomori,
    # Kagoshima, mobiles, IP phones and toll-free in Japan.
    for national in ("02122222525", "03122222222", "05321234567", "08001234567", "08501234567"):
        check_policy(parse_local_part(national, default_country_code=TR), policy())
    for national in (
        "0368680000",
        "0662345678",
        "0118111234",
        "0188601111",
        "0177341111",
        "0992861111",
        "09012345678",
        "05012345678",
        "0120123456",
    ):
        check_policy(parse_local_part(national, default_country_code=JP), policy(JP))


# --------------------------------------------------------------------------------------------
# to_international


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0368680000", "81368680000"),
        ("+81 3-6868-0000", "81368680000"),
        ("81368680000", "81368680000"),
        ("0081368680000", "81368680000"),
        ("(03) 6868 0000", "81368680000"),
        ("＋８１ ３-６８６８-００００", "81368680000"),
        ("", ""),
        ("   ", ""),
        ("anonymous", ""),
        ("Withheld", ""),
        ("0", ""),
        ("+", ""),
        ("tel:+81-3-6868-0000", "81368680000"),
        ("03\r\n6868\x000000", "81368680000"),
    ],
)
def test_to_international(raw: str, expected: str) -> None:
    assert to_international(raw, country_code=JP) == expected


def test_to_international_with_an_odd_country_code() -> None:
    assert to_international("0368680000", country_code="+81") == "81368680000"
    assert to_international("0368680000", country_code="") == "368680000"


# --------------------------------------------------------------------------------------------
# Properties


@st.composite
def phone_like(draw: st.DrawFn) -> str:
    """Numbers as people write them: a lead, digit groups, separators, maybe "(area code)"."""
    lead = draw(st.sampled_from(["", "+", "00", "0"]))
    groups = draw(
        st.lists(st.text(alphabet="0123456789", min_size=1, max_size=4), min_size=1, max_size=4)
    )
    if draw(st.booleans()):
        groups[0] = f"({groups[0]})"
    separators = draw(
        st.lists(st.sampled_from(["", "-", "."]), min_size=len(groups), max_size=len(groups))
    )
    return (
        lead + groups[0] + "".join(sep + g for sep, g in zip(separators, groups[1:], strict=False))
    )


countries = st.sampled_from([TR, JP, "1", "44", "49", "998"])


@settings(max_examples=250)
@given(local=phone_like(), country=countries)
@example(local="02122222525", country=TR)
@example(local="+902122222525", country=TR)
def test_normalisation_is_idempotent(local: str, country: str) -> None:
    try:
        once = parse_local_part(local, default_country_code=country)
    except NumberError as err:
        event(f"refused {err.enhanced}")
        assert_wire_safe(err)
        return
    event("accepted")
    assert NORMALISED.fullmatch(once)
    assert parse_local_part(once, default_country_code=country) == once


noisy_char = st.one_of(
    st.sampled_from("0123456789-.()+"),
    st.sampled_from("０１２٣٤۵५๖໗᠘９²③三〇\u200b\u00a0\r\n\t\"'%@!:,;\\<>"),
    st.characters(),
)


@settings(max_examples=150)
@given(
    local=st.one_of(
        st.text(alphabet=noisy_char, max_size=24),
        st.builds(lambda a, b, c: a + b + c, phone_like(), noisy_char, phone_like()),
    ),
    country=countries,
)
@example(local="０３１２３４５６７８", country=JP)
@example(local="٠٣١٢٣٤٥٦٧٨", country=TR)
def test_results_are_only_ascii_digits(local: str, country: str) -> None:
    try:
        number = parse_local_part(local, default_country_code=country)
    except NumberError as err:
        event(f"refused {err.enhanced}")
        assert (err.code, err.enhanced) in (SYNTAX, NOT_A_NUMBER)
        assert_wire_safe(err)
        return
    event("accepted")
    assert NORMALISED.fullmatch(number), number
    assert all(ch in "0123456789" for ch in number)


@given(
    number=phone_like(),
    position=st.integers(min_value=0),
    digit=st.characters(categories=["Nd", "No", "Nl"], exclude_characters="0123456789"),
)
def test_any_non_ascii_digit_is_a_syntax_error(number: str, position: int, digit: str) -> None:
    position %= len(number) + 1
    err = refusal(number[:position] + digit + number[position:])
    assert (err.code, err.enhanced) == SYNTAX
    assert "type the number with the ASCII digits 0-9" in err.words


builtin_entries = st.sampled_from(
    [(prefix, cls) for entries in BUILTIN_DENY.values() for prefix, cls in entries]
)
prefixes = st.text(alphabet="0123456789", min_size=1, max_size=6).filter(lambda p: p[0] != "0")


@settings(max_examples=150)
@given(
    entry=builtin_entries,
    suffix=st.text(alphabet="0123456789", min_size=MAX_DIGITS, max_size=MAX_DIGITS),
    length=st.integers(min_value=MIN_DIGITS, max_value=MAX_DIGITS),
    home=st.one_of(countries, prefixes.map(lambda p: p[:3])),
    allow=st.lists(prefixes, max_size=4),
    deny=st.lists(prefixes, max_size=2),
    broad_allow=st.integers(min_value=0, max_value=4),
)
def test_builtin_classes_never_pass_unless_explicitly_allowed(
    entry: tuple[str, str],
    suffix: str,
    length: int,
    home: str,
    allow: list[str],
    deny: list[str],
    broad_allow: int,
) -> None:
    prefix, _ = entry
    number = (prefix + suffix)[: max(length, len(prefix))]
    # Broader allows (e.g. the whole country) are added on purpose: they must not unblock.
    allow = [*allow, number[: min(broad_allow, len(prefix) - 1)] or "9"]
    explicit = [a for a in allow if number.startswith(a) and len(a) >= len(prefix)]
    unblocking = [a for a in allow if a not in explicit]
    err = denial(number, NumberPolicy.from_config(home_country=home, allow=unblocking, deny=deny))
    assert (err.code, err.enhanced) == DENIED
    # Allowing the most specific matching class (and denying nothing that matches) lets it
    # through: the chosen entry, or a longer one the suffix happens to hit ("810" -> "8100").
    deny_free = [d for d in deny if not number.startswith(d)]
    most_specific = max(
        (q for entries in BUILTIN_DENY.values() for q, _ in entries if number.startswith(q)),
        key=len,
    )
    check_policy(
        number, NumberPolicy.from_config(home_country=home, allow=[most_specific], deny=deny_free)
    )


@given(
    number=st.text(alphabet="0123456789", min_size=MIN_DIGITS, max_size=MAX_DIGITS).filter(
        lambda n: n[0] != "0"
    ),
    cut=st.integers(min_value=1, max_value=MAX_DIGITS),
    home=countries,
    allow=st.lists(prefixes, max_size=3),
)
def test_operator_deny_always_wins(number: str, cut: int, home: str, allow: list[str]) -> None:
    denied = number[: min(cut, len(number))]
    p = NumberPolicy.from_config(
        home_country=home, allow=[*allow, number, denied, number[:1]], deny=[denied]
    )
    err = denial(number, p)
    assert err.words == f"'+{number}' is blocked by this gateway's deny list"


@settings(max_examples=200)
@given(raw=st.text(), country=st.text(max_size=4))
@example(raw="+", country="")
@example(raw="0", country="0")
@example(raw="\udcff0368", country="81")
def test_to_international_never_raises(raw: str, country: str) -> None:
    result = to_international(raw, country_code=country)
    assert all(ch in "0123456789" for ch in result)
    assert not result.startswith("0")
    assert to_international(result, country_code=country) == result
