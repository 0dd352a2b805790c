"""Every derived name comes from hub_ext.host.slugs: pinned outputs, uniqueness and length edges."""

import hashlib
import itertools
import re

import pytest

from hub_ext.host.slugs import account_name, server_slug, user_slug

#: what useradd (shadow-utils) accepts by default, without --badname
USERADD_NAME = re.compile(r"^[a-z_][a-z0-9_-]*$")
#: a DNS label (RFC 1123), as Kubernetes object names need
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

NAMES = [
    "alice",
    "bob2",
    "Alice",
    "ALICE",
    "alice.smith",
    "alice-smith",
    "alice_smith",
    "alice@example.com",
    "jürgen",
    "李雷",
    "-alice",
    "2pac",
    "_",
    "a--b",
    "a",
    "root",
    "x" * 30,
    "x" * 31,
    "a" * 100,
    "émilie.dupont@université-paris.fr",
]


@pytest.mark.parametrize(
    "username, expected",
    [
        # plain lowercase names are kept, so admins recognise them
        ("alice", "alice"),
        ("bob2", "bob2"),
        ("root", "root"),
        ("a", "a"),
        ("x" * 30, "x" * 30),
        # everything else: [a-z0-9-], then a hash of the full original name
        ("Alice", "alice-3bc51062"),
        ("ALICE", "alice-e7dcee3c"),
        ("alice.smith", "alice-smith-63425827"),
        ("alice-smith", "alice-smith-c5b4d4f3"),
        ("alice_smith", "alice-smith-a073a3b2"),
        ("alice@example.com", "alice-example-com-ff8d9819"),
        ("jürgen", "jurgen-19b720a9"),
        ("李雷", "x-3a47328a"),
        ("-alice", "alice-69940822"),
        ("2pac", "x-2pac-2578fdf7"),
        ("_", "x-d2e2adf7"),
        ("a--b", "a-b-90827a2e"),
        ("x" * 31, "x" * 21 + "-0f46e4b0"),
        ("a" * 100, "a" * 21 + "-28165978"),
        ("émilie.dupont@université-paris.fr", "emilie-dupont-univers-beb3ab86"),
    ],
)
def test_user_slug(username, expected):
    assert user_slug(username) == expected


def test_hash_is_of_the_full_original_name():
    name = "a" * 100
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    assert user_slug(name).endswith("-" + digest)
    # two long names that share their first 30 characters still differ
    assert user_slug("a" * 100) != user_slug("a" * 99 + "b")


@pytest.mark.parametrize(
    "username, server, expected",
    [
        ("alice", "", "alice"),
        ("alice", "gpu", "alice--gpu"),
        ("alice", "My Server", "alice--my-server-c2d9a82f"),
        ("Alice", "gpu", "alice-3bc51062--gpu"),
        ("a", "b", "a--b"),
        ("a--b", "", "a-b-90827a2e"),
        ("a" * 100, "b" * 100, "a" * 21 + "-28165978--" + "b" * 21 + "-d6cbb053"),
    ],
)
def test_server_slug(username, server, expected):
    assert server_slug(username, server) == expected


@pytest.mark.parametrize("username", NAMES)
def test_user_slug_is_a_safe_name(username):
    slug = user_slug(username)
    assert len(slug) <= 30
    assert "--" not in slug  # so `user--server` is unambiguous
    assert DNS_LABEL.match(slug)
    assert user_slug(username) == slug  # stable


def test_different_usernames_never_share_a_slug():
    slugs = {name: user_slug(name) for name in NAMES}
    assert len(set(slugs.values())) == len(NAMES)


def test_user_server_never_equals_another_users_slug():
    servers = ["", "b", "gpu", "My Server", "a--b", "x" * 40]
    combos = list(itertools.product(NAMES, servers))
    slugs = [server_slug(user, server) for user, server in combos]
    assert len(set(slugs)) == len(combos)
    # the classic clash of naive joining: user "a--b" against user "a", server "b"
    assert server_slug("a--b") != server_slug("a", "b")
    assert server_slug("a-b") != server_slug("a", "b")


@pytest.mark.parametrize("username", NAMES)
@pytest.mark.parametrize("server", ["", "b", "x" * 100])
def test_server_slug_fits_a_dns_label(username, server):
    assert DNS_LABEL.match(server_slug(username, server))


@pytest.mark.parametrize(
    "username, prefix, expected",
    [
        ("alice", "jupyter-", "jupyter-alice"),
        ("root", "jupyter-", "jupyter-root"),
        ("Alice", "jupyter-", "jupyter-alice-3bc51062"),
        ("alice@example.com", "jupyter-", "jupyter-alice-example-c-ff8d9819"),
        # a plain name longer than the room left by the prefix is hashed
        ("x" * 30, "jupyter-", "jupyter-" + "x" * 15 + "-666a596d"),
        ("x" * 24, "jupyter-", "jupyter-" + "x" * 24),
        ("a" * 100, "jupyter-", "jupyter-" + "a" * 15 + "-28165978"),
        ("a" * 100, "sy-", "sy-" + "a" * 20 + "-28165978"),
        ("Alice", "", "alice-3bc51062"),
        # the longest prefix allowed leaves 10 characters: one, a dash and the hash
        ("a" * 100, "p" * 22, "p" * 22 + "a-28165978"),
    ],
)
def test_account_name(username, prefix, expected):
    assert account_name(username, prefix) == expected


@pytest.mark.parametrize("username", NAMES)
def test_account_name_is_valid_for_useradd(username):
    name = account_name(username)
    assert len(name) <= 32
    assert USERADD_NAME.match(name), name


def test_account_names_are_unique():
    assert len({account_name(n) for n in NAMES}) == len(NAMES)


def test_account_prefix_too_long():
    with pytest.raises(ValueError) as e:
        account_name("alice", "p" * 23)
    assert str(e.value) == (
        f"System account prefix {'p' * 23!r} is too long: it must leave at least "
        "10 of the 32 characters Linux allows for the name."
    )
