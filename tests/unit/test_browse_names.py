"""The names copy_out writes where a destination refuses the saved one."""

from recovery.browse.files import short_enough, windows_name


def test_windows_name_replaces_what_fat_and_ntfs_refuse():
    assert windows_name("Taxes 2025: final?.pdf") == "Taxes 2025_ final_.pdf"
    assert windows_name('a<b>c"d\\e|f*g') == "a_b_c_d_e_f_g"
    assert windows_name("tab\there") == "tab_here"
    assert windows_name("trailing dots...") == "trailing dots"
    assert windows_name("CON") == "_CON" and windows_name("lpt1.txt") == "_lpt1.txt"
    assert windows_name("...") == "_"
    assert windows_name("Résumé – ok.docx") == "Résumé – ok.docx"


def test_short_enough_keeps_the_extension_within_255_bytes():
    name = "é" * 200 + ".txt"                  # 404 bytes
    short = short_enough(name)
    assert len(short.encode()) <= 255 and short.endswith(".txt") and short.startswith("ééé")
    assert short_enough("plain.txt") == "plain.txt"
    assert len(short_enough("x" * 300).encode()) == 255
