// The start page: open a user, search the catalog.

import { movieLink, movieRow } from "./dom.js";
import { genreList, mountSearch } from "./search.js";

mountSearch((movie) => movieRow("li", movie.movie_id, movieLink(movie.movie_id, movie.title), genreList(movie.genres)));
