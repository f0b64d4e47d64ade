"""Held-out sets by source package and the no-overlap rule, on small synthetic inputs."""

from pipeline.corpus.clean import norm_key
from pipeline.corpus.split import filter_doc, pick_heldout, split_pairs, text_keys


def test_pick_heldout_is_deterministic_mid_sized_and_reaches_targets():
    sizes = {f"pkg{i}": n for i, n in enumerate([5, 40, 60, 80, 120, 30, 50, 70, 900, 45, 55, 65])}
    a = pick_heldout(sizes, n_test=100, n_val=60, lo=30, hi=200, seed="s")
    assert a == pick_heldout(
        dict(reversed(sizes.items())), 100, 60, 30, 200, "s"
    )  # order of input irrelevant
    test, val = a
    assert not set(test) & set(val)
    assert all(30 <= sizes[p] <= 200 for p in test + val)  # never the tiny nor the huge ones
    assert 100 <= sum(sizes[p] for p in test) <= 120
    assert 60 <= sum(sizes[p] for p in val) <= 72
    assert pick_heldout(sizes, 100, 60, 30, 200, "other seed") != a  # the seed matters


def test_split_holds_out_packages_and_removes_near_duplicates():
    by_pkg = {
        "held": [
            ("Could not open the file X.", "Die Datei X konnte nicht geöffnet werden."),
            ("Delete all selected items now", "Alle gewählten Elemente jetzt löschen"),
        ],
        "val": [
            ("Show the hidden files in this folder", "Versteckte Dateien in diesem Ordner anzeigen"),
            ("could not open the file", "Datei konnte nicht geöffnet werden"),  # = a test sentence: dropped
        ],
        "a": [
            ("could not open the file", "Konnte Datei nicht öffnen"),  # en equals test en (normalised)
            ("Remove the file completely", "Die Datei X konnte nicht geöffnet werden"),  # tgt equals test tgt
            ("Warning. Delete all selected items now! Then quit the program.", "Warnung. Löschen. Beenden."),
            ("Print the current page on paper", "Die aktuelle Seite drucken"),
            ("Print the current page on paper", "Die aktuelle Seite drucken"),  # duplicate
        ],
        "b": [
            ("Show the hidden files in this folder.", "Versteckte Dateien anzeigen")
        ],  # = a validation sentence
    }
    sp, held_en, held_tg = split_pairs(by_pkg, ["held"], ["val"])
    assert [p for *_, p in sp["test"]] == ["held", "held"]
    assert [e for e, _, _ in sp["validation"]] == ["Show the hidden files in this folder"]
    assert sp["train"] == [("Print the current page on paper", "Die aktuelle Seite drucken", "a")]
    # the rule itself, checked the way the integration test checks the real corpus
    for e, t, _ in sp["train"]:
        assert not text_keys(e) & held_en and not text_keys(t) & held_tg


def test_mono_filter_drops_held_out_sentences_and_repeats():
    held = set(text_keys("Could not open the file X."))
    seen: set[str] = set()
    doc = "A first line of text here.\nCOULD NOT OPEN THE FILE %s\nSo it goes. Could not open the file. Bye now.\nA first line of text here."
    assert filter_doc(doc, held, seen) == "A first line of text here."
    assert (
        filter_doc("A first line of text here.\nAnother line of text.", held, seen) == "Another line of text."
    )


def test_text_keys_cover_sentences_of_a_paragraph():
    ks = text_keys("Choose Format - Page. The dialog opens. Click OK to apply it.")
    assert norm_key("The dialog opens") in ks and norm_key("click ok to apply it") in ks
    assert norm_key("Choose Format - Page. The dialog opens. Click OK to apply it.") in ks
