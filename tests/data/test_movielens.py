"""read_ratings_set: every MovieLens layout and packaging, malformed lines, the real archives."""

from __future__ import annotations

import tarfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data import movielens, ratings_file
from app.data.movielens import RatingsSet, RowProblem, read_ratings_set
from app.data.synth import PRESETS, write_synthetic

SharedArchive = Callable[[str], Path | None]

# --- fixture data in each layout ------------------------------------------------------------------

U_DATA = "1\t10\t4\t881250949\n1\t20\t3\t881250950\n2\t10\t5\t881250951\n"
U_ITEM = (
    "10|Misérables, Les (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|1|0|0|0|1|0|0|0|0|0|0\n"
    "20|Toy Story (1995)|01-Jan-1995||http://y|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "30|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
)
U_GENRE = "".join(f"{name}|{i}\n" for i, name in enumerate(movielens.ML100K_GENRES)) + "\n"
RATINGS_DAT = "1::10::4::978300760\n1::20::3::978302109\n2::10::5::978301968\n"
RATINGS_DAT_HALF = "1::10::4.5::978300760\n1::20::3::978302109\n2::10::0.5::978301968\n"
MOVIES_DAT = (
    "10::Slingshot, The (Kådisbellan ) (1993)::Comedy|Drama\n"
    "20::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
)
RATINGS_CSV = (
    "userId,movieId,rating,timestamp\n1,10,4.0,1260759144\n1,20,3.5,1260759179\n2,10,0.5,1260759182\n"
)
MOVIES_CSV = (
    "movieId,title,genres\n"
    '10,"American President, The (1995)",Comedy|Drama|Romance\n'
    "20,Babylon 5,(no genres listed)\n"
    "30,Cosmos (1980\u20131981),Documentary\n"
    "40,Amélie (Fabuleux destin d'Amélie Poulain) (2001),Comedy|Romance\n"
)

EXPECTED_PAIRS = [(1, 10), (1, 20), (2, 10)]


def write_files(folder: Path, files: dict[str, str], encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.encode(encoding))
    return folder


def ml100k_folder(root: Path) -> Path:
    return write_files(root / "ml-100k", {"u.data": U_DATA, "u.item": U_ITEM, "u.genre": U_GENRE}, "latin-1")


def ml1m_folder(root: Path) -> Path:
    return write_files(root / "ml-1m", {"ratings.dat": RATINGS_DAT, "movies.dat": MOVIES_DAT}, "latin-1")


def ml10m_folder(root: Path) -> Path:
    files = {"ratings.dat": RATINGS_DAT_HALF, "movies.dat": MOVIES_DAT}
    return write_files(root / "ml-10M100K", files, "utf-8")


def ml_latest_folder(root: Path) -> Path:
    return write_files(root / "ml-latest-small", {"ratings.csv": RATINGS_CSV, "movies.csv": MOVIES_CSV})


def packaged(folder: Path, packaging: str, root: Path) -> Path:
    """`folder` as GroupLens ships it: the archive holds the folder itself, one level down."""
    if packaging == "folder":
        return folder
    if packaging == "zip":
        archive = root / f"{folder.name}.zip"
        with zipfile.ZipFile(archive, "w") as out:
            for path in sorted(folder.iterdir()):
                out.write(path, f"{folder.name}/{path.name}")
        return archive
    archive = root / f"{folder.name}.{packaging}"
    with tarfile.open(archive, "w:gz") as out:
        out.add(folder, arcname=f"./{folder.name}")  # "./" as `tar czf x.tgz .` writes it
    return archive


def pairs(data: RatingsSet) -> list[tuple[int, int]]:
    return list(zip(data.ratings["user_id"].tolist(), data.ratings["movie_id"].tolist(), strict=True))


def check_shape(data: RatingsSet) -> None:
    """The contract's columns and dtypes."""
    assert list(data.ratings.columns) == ["user_id", "movie_id", "rating", "timestamp", "line"]
    assert [str(t) for t in data.ratings.dtypes] == ["int64", "int64", "float32", "int64", "int64"]
    assert list(data.movies.columns) == ["movie_id", "title", "year", "genres"]
    assert data.movies["movie_id"].dtype == np.int64
    assert str(data.movies["year"].dtype) == "Int64"


# --- layouts and packaging ------------------------------------------------------------------------

PACKAGINGS = ["folder", "zip", "tar.gz", "tgz"]


@pytest.mark.parametrize("packaging", PACKAGINGS)
def test_ml100k_layout(tmp_path: Path, packaging: str) -> None:
    data = read_ratings_set(packaged(ml100k_folder(tmp_path / "src"), packaging, tmp_path))
    check_shape(data)
    assert data.name == "ml-100k"
    assert pairs(data) == EXPECTED_PAIRS
    assert data.ratings["rating"].tolist() == [4.0, 3.0, 5.0]
    assert data.ratings["timestamp"].tolist() == [881250949, 881250950, 881250951]
    assert data.ratings["line"].tolist() == [1, 2, 3]
    movies = data.movies.set_index("movie_id")
    assert movies.loc[10, "title"] == "Misérables, Les (1995)"  # latin-1 decoded
    assert movies.loc[10, "year"] == 1995
    assert movies.loc[10, "genres"] == "Drama|Musical"
    assert movies.loc[20, "genres"] == "Animation|Children's|Comedy"
    assert movies.loc[30, "genres"] == ""  # flag "unknown" means no genre
    assert pd.isna(movies.loc[30, "year"])
    assert data.problems == []


def test_ml100k_genre_names_come_from_u_genre(tmp_path: Path) -> None:
    folder = ml100k_folder(tmp_path)
    renamed = U_GENRE.replace("Drama|8", "Drame|8")
    (folder / "u.genre").write_text(renamed, encoding="latin-1")
    assert read_ratings_set(folder).movies.set_index("movie_id").loc[10, "genres"] == "Drame|Musical"
    (folder / "u.genre").unlink()
    assert read_ratings_set(folder).movies.set_index("movie_id").loc[10, "genres"] == "Drama|Musical"


@pytest.mark.parametrize("packaging", PACKAGINGS)
def test_ml1m_layout(tmp_path: Path, packaging: str) -> None:
    data = read_ratings_set(packaged(ml1m_folder(tmp_path / "src"), packaging, tmp_path))
    check_shape(data)
    assert data.name == "ml-1m"
    assert pairs(data) == EXPECTED_PAIRS
    assert data.ratings["rating"].tolist() == [4.0, 3.0, 5.0]
    assert data.ratings["timestamp"].tolist() == [978300760, 978302109, 978301968]
    movies = data.movies.set_index("movie_id")
    assert movies.loc[10, "title"] == "Slingshot, The (Kådisbellan ) (1993)"
    # A single ':' inside a title does not split it.
    assert movies.loc[20, "title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert movies.loc[20, "year"] == 1977
    assert movies.loc[20, "genres"] == "Action|Sci-Fi"


def test_ml10m_layout_has_half_stars(tmp_path: Path) -> None:
    data = read_ratings_set(packaged(ml10m_folder(tmp_path / "src"), "zip", tmp_path))
    assert data.name == "ml-10M100K"
    assert data.ratings["rating"].tolist() == [4.5, 3.0, 0.5]
    assert data.movies["title"].tolist()[0] == "Slingshot, The (Kådisbellan ) (1993)"  # UTF-8 file


@pytest.mark.parametrize("packaging", PACKAGINGS)
def test_ml_latest_layout(tmp_path: Path, packaging: str) -> None:
    data = read_ratings_set(packaged(ml_latest_folder(tmp_path / "src"), packaging, tmp_path))
    check_shape(data)
    assert data.name == "ml-latest-small"
    assert pairs(data) == EXPECTED_PAIRS
    assert data.ratings["rating"].tolist() == [4.0, 3.5, 0.5]
    assert data.ratings["line"].tolist() == [2, 3, 4]  # after the header
    movies = data.movies.set_index("movie_id")
    assert movies.loc[10, "title"] == "American President, The (1995)"
    assert movies.loc[10, "genres"] == "Comedy|Drama|Romance"
    assert pd.isna(movies.loc[20, "year"])
    assert movies.loc[20, "genres"] == ""
    assert movies.loc[30, "year"] == 1980  # a range's start
    assert movies.loc[40, "title"].startswith("Amélie")


def test_a_lone_ratings_file_gets_its_movies_from_beside_it(tmp_path: Path) -> None:
    folder = ml1m_folder(tmp_path)
    data = read_ratings_set(folder / "ratings.dat")
    assert data.name == "ratings.dat"
    assert pairs(data) == EXPECTED_PAIRS
    assert len(data.movies) == 2
    u_data = read_ratings_set(ml100k_folder(tmp_path) / "u.data")
    assert len(u_data.movies) == 3


@pytest.mark.parametrize(
    ("text", "timestamps"),
    [
        ("user_id,movie_id,rating,timestamp\n1,10,4,5\n1,20,3,6\n2,10,5,7\n", [5, 6, 7]),
        ("1,10,4,5\n1,20,3,6\n2,10,5,7\n", [5, 6, 7]),
        ("user_id,movie_id,rating\n1,10,4\n1,20,3\n2,10,5\n", [0, 0, 0]),
        ("1,10,4\n1,20,3\n2,10,5\n", [0, 0, 0]),
        ("\ufeffuserId,movieId,rating\r\n1,10,4\r\n1,20,3\r\n2,10,5\r\n", [0, 0, 0]),
        ("movie_id,user_id,rating\n10,1,4\n20,1,3\n10,2,5", [0, 0, 0]),
    ],
    ids=["header", "no-header", "3-columns", "3-columns-no-header", "bom-crlf", "reordered"],
)
def test_plain_csv(tmp_path: Path, text: str, timestamps: list[int]) -> None:
    path = tmp_path / "my ratings.csv"
    path.write_text(text, encoding="utf-8", newline="")
    data = read_ratings_set(path)
    check_shape(data)
    assert data.name == "my ratings.csv"
    assert pairs(data) == EXPECTED_PAIRS
    assert data.ratings["rating"].tolist() == [4.0, 3.0, 5.0]
    assert data.ratings["timestamp"].tolist() == timestamps
    assert data.problems == []
    # No movies file: the rated movies, untitled.
    assert data.movies["movie_id"].tolist() == [10, 20]
    assert data.movies["title"].tolist() == ["", ""]
    assert data.movies["genres"].tolist() == ["", ""]
    assert data.movies["year"].isna().all()


def test_plain_csv_uses_a_movies_csv_beside_it(tmp_path: Path) -> None:
    (tmp_path / "mine.csv").write_text("1,10,4\n1,20,3\n")
    (tmp_path / "movies.csv").write_text("10,Heat (1995),Action|Crime\n20,Up (2009)\n")
    movies = read_ratings_set(tmp_path / "mine.csv").movies.set_index("movie_id")
    assert movies.loc[10, "genres"] == "Action|Crime"
    assert movies.loc[20, "year"] == 2009
    assert movies.loc[20, "genres"] == ""


def test_empty_and_header_only_files_have_no_ratings(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("userId,movieId,rating,timestamp\n")
    for name in ("empty.csv", "header.csv"):
        data = read_ratings_set(tmp_path / name)
        check_shape(data)
        assert len(data.ratings) == 0
        assert len(data.movies) == 0
        assert data.problems == []


def test_a_source_without_ratings_is_refused(tmp_path: Path) -> None:
    write_files(tmp_path / "nothing", {"README": "hello"})
    with pytest.raises(ValueError, match="no MovieLens ratings file"):
        read_ratings_set(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError):
        read_ratings_set(tmp_path / "missing")


def test_a_header_without_the_needed_columns_is_refused(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user,movie,score\n1,2,3\n")
    with pytest.raises(ValueError, match="rating"):
        read_ratings_set(tmp_path / "r.csv")


# --- malformed lines ------------------------------------------------------------------------------

MALFORMED_CSV = (
    "user_id,movie_id,rating,timestamp\n"  # 1
    "1,10,4,100\n"  # 2 good
    "1,11\n"  # 3
    "\n"  # 4
    "2,12,x,300\n"  # 5
    "2,13,3.5,400,9\n"  # 6
    "3,14,,500\n"  # 7
    "3,15,5,abc\n"  # 8
    "4,1.5,3,600\n"  # 9
    "4,16,nan,700\n"  # 10
    "5,17,inf,800\n"  # 11
    "5,18,4,900\r\n"  # 12 good (CRLF)
    "6,19,2\r,1000\n"  # 13
    '"7",20,3,1100\n'  # 14
    "8,21,7,1200\n"  # 15 good: off-scale is the importer's business
    "9,22,4,1300"  # 16 good, no final newline
)
MALFORMED_EXPECTED = [
    RowProblem(3, "malformed: expected 4 fields, got 2"),
    RowProblem(4, "empty line"),
    RowProblem(5, "rating 'x' is not a number"),
    RowProblem(6, "malformed: expected 4 fields, got 5"),
    RowProblem(7, "rating is empty"),
    RowProblem(8, "timestamp 'abc' is not a number"),
    RowProblem(9, "movie_id 1.5 is not a whole number"),
    RowProblem(10, "rating 'nan' is not a number"),
    RowProblem(11, "rating 'inf' is not a number"),
    RowProblem(13, "malformed: carriage return inside the line"),
    RowProblem(14, "user_id '\"7\"' is not a number"),
]


def test_malformed_lines_are_reported_with_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_bytes(MALFORMED_CSV.encode())
    data = read_ratings_set(path)
    check_shape(data)
    assert data.problems == MALFORMED_EXPECTED
    assert data.ratings["line"].tolist() == [2, 12, 15, 16]
    assert pairs(data) == [(1, 10), (5, 18), (8, 21), (9, 22)]
    assert data.ratings["rating"].tolist() == [4.0, 4.0, 7.0, 4.0]
    assert data.ratings["timestamp"].tolist() == [100, 900, 1200, 1300]


def test_malformed_dat_lines(tmp_path: Path) -> None:
    text = (
        "1::10::4::100\n"  # 1 good
        "1::11::3\n"  # 2
        "1:::12::3::100\n"  # 3 ':::' is no separator
        "2::13::x::100\n"  # 4
        "2::14::5::100::7\n"  # 5
        "3::15::2::100\n"  # 6 good
    )
    write_files(tmp_path / "ml-1m", {"ratings.dat": text})
    data = read_ratings_set(tmp_path / "ml-1m")
    assert data.problems == [
        RowProblem(2, "malformed: expected 4 fields, got 3"),
        RowProblem(3, "movie_id ':12' is not a number"),
        RowProblem(4, "rating 'x' is not a number"),
        RowProblem(5, "malformed: expected 4 fields, got 5"),
    ]
    assert data.ratings["line"].tolist() == [1, 6]


TOO_LONG = "malformed: expected 4 fields, got 5"


@pytest.mark.parametrize(
    ("text", "problems", "good_lines"),
    [
        ("1,10,4,100,99\n1,11,3,100\n2,12,5,100\n", [RowProblem(1, TOO_LONG)], [2, 3]),
        # The separators add up over the file: only the first line's own count gives it away.
        (
            "1,10,4,100,99\n1,11,3,100\n2,12,5\n3,13,4,100\n",
            [RowProblem(1, TOO_LONG), RowProblem(3, "malformed: expected 4 fields, got 3")],
            [2, 4],
        ),
    ],
)
def test_a_too_long_first_line_is_reported_quietly(
    tmp_path: Path, text: str, problems: list[RowProblem], good_lines: list[int]
) -> None:
    # pandas drops the extra fields of a too-long *first* line with nothing but a warning.
    (tmp_path / "r.csv").write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = read_ratings_set(tmp_path / "r.csv")
    assert data.problems == problems
    assert data.ratings["line"].tolist() == good_lines


def test_all_lines_bad(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("1,2,3,4\na,b,c,d\n1,2\n")
    data = read_ratings_set(tmp_path / "r.csv")
    assert [p.line for p in data.problems] == [2, 3]
    (tmp_path / "r.csv").write_text("1,2,x,4\n1,2,y,4\n")
    data = read_ratings_set(tmp_path / "r.csv")
    check_shape(data)
    assert len(data.ratings) == 0
    assert [p.line for p in data.problems] == [1, 2]


def test_line_numbers_hold_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small blocks, bad lines scattered: same answer as in one block, numbers exact."""
    rng = np.random.default_rng(7)
    lines, good_lines = ["userId,movieId,rating,timestamp"], []
    for number in range(2, 3_002):
        kind = rng.integers(0, 10)
        if kind == 0:
            lines.append(f"{number},1")
        elif kind == 1:
            lines.append(f"{number},x,3,4")
        elif kind == 2:
            lines.append("")
        else:
            lines.append(f"{number},{number % 97},{number % 5 + 1},{number * 10}")
            good_lines.append(number)
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")

    whole = read_ratings_set(path)
    monkeypatch.setattr(ratings_file, "_BLOCK_BYTES", 256)
    blocked = read_ratings_set(path)
    for data in (whole, blocked):
        assert data.ratings["line"].tolist() == good_lines
        assert data.ratings["user_id"].tolist() == good_lines  # each good line names its number
        assert data.ratings["timestamp"].tolist() == [n * 10 for n in good_lines]
        assert len(data.problems) == 3_000 - len(good_lines)
    assert blocked.problems == whole.problems
    pd.testing.assert_frame_equal(blocked.ratings, whole.ratings)


# --- the real archives ----------------------------------------------------------------------------


def test_real_ml100k(shared_archive: SharedArchive) -> None:
    archive = shared_archive("ml-100k")
    if archive is None:
        pytest.skip("ml-100k.tar.gz is not in the shared data folder")
    data = read_ratings_set(archive)
    check_shape(data)
    assert data.name == "ml-100k"
    assert len(data.ratings) == 100_000
    assert data.ratings["user_id"].nunique() == 943
    assert data.ratings["movie_id"].nunique() == 1_682
    assert len(data.movies) == 1_682
    assert data.problems == []
    assert set(data.ratings["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    star_wars = data.movies.set_index("movie_id").loc[50]
    assert (star_wars["title"], star_wars["year"]) == ("Star Wars (1977)", 1977)
    assert star_wars["genres"] == "Action|Adventure|Romance|Sci-Fi|War"


def test_real_ml1m_part1(shared_archive: SharedArchive) -> None:
    archive = shared_archive("ml-1m-part1")
    if archive is None:
        pytest.skip("ml-1m-part1.tar.gz is not in the shared data folder")
    data = read_ratings_set(archive)
    check_shape(data)
    assert data.name == "ml-1m-part1"
    assert len(data.ratings) == 487_650
    assert data.ratings["user_id"].nunique() == 2_999
    assert data.ratings["movie_id"].nunique() == 3_615
    assert len(data.movies) == 3_883
    assert data.problems == []
    assert data.ratings["line"].iloc[-1] == 487_650
    assert data.movies.set_index("movie_id").loc[1, "genres"] == "Animation|Children's|Comedy"


def test_lines_damaged_in_place_leave_the_rest_readable(
    tmp_path: Path, shared_archive: SharedArchive
) -> None:
    """The real u.data (or, without it, a generated ratings.csv) with two lines broken in place."""
    archive = shared_archive("ml-100k")
    if archive is None:
        ratings_file = write_synthetic(tmp_path / "ml-100k", *PRESETS["ml-100k"]) / "ratings.csv"
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp_path, filter="data")
        ratings_file = tmp_path / "ml-100k" / "u.data"
    lines = ratings_file.read_text().splitlines()
    total = len(read_ratings_set(ratings_file.parent).ratings)
    lines[1] = lines[1][:4]  # cut short: too few fields
    lines[49_999] = "x" + lines[49_999]  # user id no number
    ratings_file.write_text("\n".join(lines) + "\n")
    data = read_ratings_set(ratings_file.parent)
    assert [p.line for p in data.problems] == [2, 50_000]
    assert len(data.ratings) == total - 2
