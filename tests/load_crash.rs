//! Crash hygiene of `pgml.load_dataset`: a pgmld killed with `kill -9` mid-load leaves a
//! staging table behind, and the next pgmld to use the database removes it (while a load
//! that is still running keeps its own).

mod support;

use std::time::{Duration, Instant};
use support::{psql_direct, temp_dir, Pgmld, TestDb};

fn staging_tables(db: &str) -> Vec<String> {
    psql_direct(db, "SELECT relname FROM pg_class WHERE relname LIKE 'pgmld\\_load\\_%' ORDER BY 1")
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_load_leaves_no_staging_table_after_a_restart() {
    let rows = support::data::imdb_rows(0, 25_000);
    let dir = temp_dir("pgmld-crash");
    let big = dir.join("big.csv");
    let mut w = csv::Writer::from_path(&big).unwrap();
    w.write_record(["text", "label"]).unwrap();
    for _ in 0..4 {
        for (t, l) in &rows {
            w.write_record([t.as_str(), &l.to_string()]).unwrap();
        }
    }
    w.flush().unwrap();
    let db = TestDb::create();
    let mut p = Pgmld::start();
    let c = p.connect(&db.name).await;
    let sql = format!(
        "SELECT * FROM pgml.load_dataset('{}', kwargs => '{{\"table\": \"public.reviews\"}}')",
        big.display()
    );
    let load = tokio::spawn(async move { c.query(sql.as_str(), &[]).await });
    let deadline = Instant::now() + Duration::from_secs(60);
    while staging_tables(&db.name).is_empty() {
        assert!(
            Instant::now() < deadline && !load.is_finished(),
            "no staging table appeared; log:\n{}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.child.kill().unwrap(); // SIGKILL: nothing of pgmld's runs after this
    p.child.wait().unwrap();
    assert!(load.await.unwrap().is_err());
    let left = staging_tables(&db.name);
    assert_eq!(left.len(), 1, "the killed load's table is there: {left:?}");

    // A running load of another pgmld holds its table: a restart must not take it.
    let other = db.name.clone();
    psql_direct(
        &other,
        &format!("CREATE TABLE public.pgmld_load_77 (x int); COMMENT ON TABLE public.pgmld_load_77 IS '{}'", pgmld_schema::staging::STAGING_COMMENT),
    );
    let holder = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", &other, "-qAtc"])
        .arg(format!(
            "SELECT pg_advisory_lock({}, 77), pg_sleep(30)",
            pgmld_schema::staging::STAGING_LOCK_CLASS
        ))
        .spawn()
        .unwrap();
    let mut holder = Guard(holder);
    let deadline = Instant::now() + Duration::from_secs(10);
    while psql_direct(
        &other,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 77",
    )
    .trim()
        != "1"
    {
        assert!(Instant::now() < deadline, "the lock holder did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let p2 = Pgmld::start();
    let c2 = p2.connect(&db.name).await; // first use of the database: migrations, then cleanup
    c2.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(
        staging_tables(&db.name),
        vec!["pgmld_load_77".to_string()],
        "log:\n{}",
        p2.log_text()
    );
    assert!(p2.log_text().contains("removed leftover load_dataset staging tables"));
    let _ = holder.0.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills the child on drop, so a failing assertion leaves no sleeping psql behind.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
