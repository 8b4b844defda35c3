//! The web dashboard (`--dashboard-listen`): a Postgres role logs in with its own password,
//! checked by the upstream, and sees only the projects, models, files and jobs it may use;
//! a running tune's curve grows in a real headless Chromium.

mod support;
#[path = "support/upstream.rs"]
mod upstream;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::models::{create_table, imdb_balanced, tiny_bert};
use support::roles::{connect_as, Role};
use support::webdriver::Browser;
use support::{psql_direct, Pgmld, Start, TestDb};
use tokio_postgres::NoTls;
use upstream::{cluster, start_failing, Scratch, PW};

const ALICE_PW: &str = "alice-Dash_1";
const WRONG_PW: &str = "Wrong-Guess_9";
const BOB_PW: &str = "bob-Dash_2";

/// An HTTP client that keeps its hands off redirects and cookies, so the test sees both.
fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Logs in through the form; returns the status and the session cookie (`name=value`).
async fn login(base: &str, user: &str, password: &str, db: &str) -> (u16, Option<String>, String) {
    let r = http()
        .post(format!("{base}/login"))
        .form(&[("user", user), ("password", password), ("database", db)])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    (status, cookie, unescape(&r.text().await.unwrap()))
}

async fn get(base: &str, path: &str, cookie: &str) -> (u16, String) {
    let r = http().get(format!("{base}{path}")).header("cookie", cookie).send().await.unwrap();
    (r.status().as_u16(), unescape(&r.text().await.unwrap()))
}

/// The page's text with minijinja's HTML escapes undone, so checks read as the page does.
fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_checked_by_the_upstream_and_pages_show_only_what_the_role_may_use() {
    let scratch = Scratch::new("pgmld-dashboard");
    let cluster = cluster(&scratch, None);
    let p = Pgmld::start_with(Start {
        upstream: Some(cluster.url()),
        extra_args: vec!["--dashboard-listen".into(), "127.0.0.1:0".into()],
        ..Start::default()
    });
    let base = format!("http://{}", p.dashboard.expect("dashboard address printed"));
    let (admin, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres password={PW} dbname=postgres",
            cluster.port()
        ),
        NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // pgmld applied the pgml schema to the upstream's database at startup.
    admin
        .batch_execute(&format!(
            "CREATE ROLE alice LOGIN PASSWORD '{ALICE_PW}';
             CREATE ROLE bob LOGIN PASSWORD '{BOB_PW}';
             CREATE ROLE carol NOLOGIN;
             CREATE ROLE team NOLOGIN; GRANT team TO alice;
             GRANT USAGE ON SCHEMA pgml TO alice;
             INSERT INTO pgml.projects (id, name, task, owner) VALUES
               (101, 'alice_reviews', 'text-classification', 'alice'),
               (102, 'team_chat', 'conversation', 'team'),
               (103, 'carol_secret', 'text-classification', 'carol');
             INSERT INTO pgml.models (id, project_id, algorithm, base_model, status, metrics, hyperparams, owner) VALUES
               (201, 101, 'transformers', 'sentence-transformers/all-MiniLM-L6-v2', 'successful',
                '{{\"accuracy\": 0.8125, \"f1\": 0.8, \"eval_loss\": 0.41}}', '{{\"training_args\": {{\"seed\": 7}}}}', 'alice'),
               (202, 101, 'transformers', 'pgml:201', 'in_progress', NULL, '{{}}', 'alice'),
               (203, 102, 'transformers', 'HuggingFaceTB/SmolLM2-135M-Instruct', 'successful', '{{\"eval_loss\": 1.5}}', '{{}}', 'team'),
               (204, 103, 'transformers', 'carol-model-secret', 'successful', '{{}}', '{{}}', 'carol');
             INSERT INTO pgml.deployments (project_id, model_id, strategy) VALUES (101, 201, 'new_score');
             INSERT INTO pgml.logs (model_id, project_id, logs) VALUES
               (202, 101, '{{\"loss\": 0.69, \"step\": 5, \"max_steps\": 40, \"progress\": 0.125, \"eta_seconds\": 70}}'),
               (202, 101, '{{\"loss\": 0.61, \"step\": 10, \"max_steps\": 40, \"progress\": 0.25, \"eta_seconds\": 60}}'),
               (202, 101, '{{\"eval_loss\": 0.58, \"eval_accuracy\": 0.7, \"step\": 10, \"max_steps\": 40, \"progress\": 0.25}}'),
               (201, 101, '{{\"hub\": \"pushed\", \"repo\": \"alice/reviews\", \"url\": \"https://huggingface.co/alice/reviews\", \"commit\": \"0123456789abcdef\", \"step\": 40}}'),
               (204, 103, '{{\"loss\": 9.99, \"step\": 1, \"max_steps\": 2}}');
             INSERT INTO pgml.files (model_id, path, part, data, owner) VALUES
               (201, 'model.safetensors', 0, '\\x0102', 'alice'), (201, 'model.safetensors', 1, '\\x03', 'alice'),
               (201, 'config.json', 0, '\\x7b7d', 'alice'), (204, 'carol.bin', 0, '\\x00', 'carol');
             INSERT INTO pgml.jobs (model_id, project_id, kind, status, progress, worker, owner) VALUES
               (202, 101, 'tune', 'running', 0.25, 'pgmld-test', 'alice'),
               (204, 103, 'tune', 'succeeded', 1, 'pgmld-test', 'carol');"
        ))
        .await
        .unwrap();

    // No session: every page sends the browser to the login form.
    let r = http().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let (status, form) = get(&base, "/login", "").await;
    assert_eq!(status, 200);
    assert!(form.contains("name=\"password\"") && form.contains("value=\"postgres\""), "{form}");

    // The upstream decides: a wrong password, an unknown role and an unknown database fail.
    let (status, cookie, page) = login(&base, "alice", WRONG_PW, "").await;
    assert_eq!((status, cookie), (401, None));
    assert!(page.contains("login refused: wrong role or password"), "{page}");
    let (status, _, page2) = login(&base, "nobody", "x", "").await;
    assert_eq!(status, 401);
    assert_eq!(
        page.replace("alice", ""),
        page2.replace("nobody", ""),
        "an unknown role reads like a wrong password"
    );
    let (status, _, page) = login(&base, "alice", ALICE_PW, "no_such_db").await;
    assert_eq!(status, 401);
    assert!(page.contains("database \"no_such_db\" does not exist"), "{page}");

    let (status, cookie, _) = login(&base, "alice", ALICE_PW, "").await;
    assert_eq!(status, 303);
    let alice = cookie.expect("session cookie");
    assert!(alice.starts_with("pgmld_dashboard=") && alice.len() > 70, "{alice}");

    // Projects: her own and her group's, never carol's.
    let r = http().get(format!("{base}/")).header("cookie", &alice).send().await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(page.contains("alice_reviews") && page.contains("team_chat"), "{page}");
    assert!(!page.contains("carol"), "carol's project leaked: {page}");
    assert!(page.contains("alice · database postgres"), "{page}");

    let (status, page) = get(&base, "/projects/101", &alice).await;
    assert_eq!(status, 200);
    assert!(page.contains("model 201") && page.contains("model 202"), "{page}");
    assert!(page.contains("accuracy 0.8125 · f1 0.8000 · eval_loss 0.4100"), "{page}");
    assert!(page.contains("deployed"), "{page}");

    // A model: scores, lineage, hub repo, files, and its curve as SVG.
    let (status, page) = get(&base, "/models/201", &alice).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("sentence-transformers/all-MiniLM-L6-v2"), "{page}");
    assert!(
        page.contains("https://huggingface.co/alice/reviews") && page.contains("0123456789ab"),
        "{page}"
    );
    assert!(page.contains("model.safetensors") && page.contains("3 B"), "parts summed: {page}");
    assert!(page.contains("<code>pgml:201</code>"), "{page}");
    let (_, page) = get(&base, "/models/202", &alice).await;
    assert!(page.contains(r#"data-points="3""#), "two losses and an eval: {page}");
    assert!(page.contains(r#"<a href="/models/201">pgml:201</a>"#), "base model links: {page}");
    assert!(page.contains("data-live=\"on\"") && page.contains("about 1m 00s left"), "{page}");
    assert!(page.contains("eval_accuracy 0.7000"), "{page}");
    let (status, live) = get(&base, "/models/202/live", &alice).await;
    assert_eq!(status, 200);
    let live: Value = serde_json::from_str(&live).unwrap();
    assert_eq!(live["points"], 3);
    assert_eq!(live["status"], "in_progress");
    assert_eq!(live["eta"], "1m 00s");
    assert!(live["chart"].as_str().unwrap().starts_with("<svg"), "{live}");

    // Jobs: hers only, with progress.
    let (_, page) = get(&base, "/jobs", &alice).await;
    assert!(page.contains("alice_reviews") && page.contains("value=\"0.25\""), "{page}");
    assert!(page.contains("data-reload=\"5\""), "running jobs refresh: {page}");
    assert!(!page.contains("carol"), "{page}");

    // Another role's model, files and logs read as absent, by page and by live data.
    for path in ["/models/204", "/projects/103", "/models/204/live", "/models/999"] {
        let (status, page) = get(&base, path, &alice).await;
        assert_eq!(status, 404, "{path}: {page}");
        assert!(!page.contains("carol-model-secret") && !page.contains("9.99"), "{path}: {page}");
    }

    // bob may log in but has no USAGE on schema pgml: nothing, and why.
    let (status, bob, _) = login(&base, "bob", BOB_PW, "").await;
    assert_eq!(status, 303);
    let (status, page) = get(&base, "/", &bob.unwrap()).await;
    assert_eq!(status, 403);
    assert!(page.contains("GRANT USAGE ON SCHEMA pgml TO \"bob\";"), "{page}");

    // A superuser sees everything.
    let (_, admin_cookie, _) = login(&base, "postgres", PW, "postgres").await;
    let (_, page) = get(&base, "/", &admin_cookie.unwrap()).await;
    assert!(page.contains("carol_secret") && page.contains("alice_reviews"), "{page}");

    // Revoking takes effect on the next page, without a new login.
    admin.batch_execute("REVOKE team FROM alice").await.unwrap();
    let (_, page) = get(&base, "/", &alice).await;
    assert!(!page.contains("team_chat") && page.contains("alice_reviews"), "{page}");

    // Log out ends the session; the old cookie no longer works.
    let r = http().post(format!("{base}/logout")).header("cookie", &alice).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let r = http().get(format!("{base}/")).header("cookie", &alice).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let (status, _) = get(&base, "/models/202/live", &alice).await;
    assert_eq!(status, 401);

    // Secrets never reach the log; logins do, by role.
    let log = p.log_text();
    for secret in [ALICE_PW, BOB_PW, PW, WRONG_PW] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    assert!(log.contains("dashboard login") && log.contains("dashboard login refused"), "{log}");
}

/// The issue's scenario in a real browser: log in, open a running tune's model page and
/// watch its curve gain points without reloading; a screenshot for the README.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_tunes_curve_gains_points_in_headless_chromium() {
    let _one_at_a_time = support::serial::model_test().await;
    let data = imdb_balanced(0, 400);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let db = TestDb::create();
    let rows: Vec<Vec<String>> = data.iter().map(|(t, c)| vec![t.clone(), c.to_string()]).collect();
    create_table(&db.name, "reviews", &["text", "class"], &rows).await;
    let p = Pgmld::start_with(Start {
        extra_args: vec!["--dashboard-listen".into(), "127.0.0.1:0".into()],
        ..Start::default()
    });
    let base = format!("http://{}", p.dashboard.expect("dashboard address printed"));
    // A plain LOGIN role with the grants a tune needs, and a password for the dashboard.
    let role = Role::create(&db, "dash");
    let r = &role.name;
    drop(p.connect(&db.name).await); // applies the pgml schema to the new database
    psql_direct(
        &db.name,
        &format!(
            "ALTER ROLE {r} PASSWORD 'pw-{r}'; GRANT USAGE ON SCHEMA pgml TO {r};
             GRANT SELECT ON reviews TO {r}; GRANT pg_read_server_files TO {r};"
        ),
    );
    let client = connect_as(&p, &db.name, r).await;
    // Long enough for several of the page's redraws (every 2 s) on a loaded machine.
    let hp = r#"{"training_args": {"learning_rate": 1e-3, "num_train_epochs": 8, "per_device_train_batch_size": 8,
        "logging_steps": 1, "seed": 3, "eval_strategy": "steps", "eval_steps": 20},
        "dataset_args": {"text_column": "text", "class_column": "class"}}"#;
    let sql = format!(
        "SELECT status FROM pgml.tune('watched', task => 'text-classification', relation_name => 'reviews', \
         model_name => '{}', hyperparams => '{hp}', test_size => 0.2)",
        model.display()
    );
    let tune = tokio::spawn(async move {
        client.query_one(sql.as_str(), &[]).await.map(|r| r.get::<_, String>(0))
    });

    let browser = Browser::start().await;
    browser.goto(&format!("{base}/")).await;
    assert!(browser.url().await.ends_with("/login"), "sent to the login form");
    browser.type_into("#user", r).await;
    browser.type_into("#password", &format!("pw-{r}")).await;
    browser.type_into("#database", &db.name).await;
    browser.click("#login").await;
    // The login checks the password with the upstream; on a loaded machine the click can
    // return before the redirect that follows has landed (CI once read /login here).
    let home = format!("{base}/");
    assert_eq!(browser.wait_for_url(&home, Duration::from_secs(30)).await, home);

    // The project appears once the tune has written its model row; open the model.
    let href = |css: &str| {
        format!(
            "const a = document.querySelector('{css}'); return a ? a.getAttribute('href') : null"
        )
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let model_link = loop {
        browser.goto(&format!("{base}/")).await;
        if let Some(project) = browser.script(&href("a.project")).await.as_str() {
            browser.goto(&format!("{base}{project}")).await;
            if let Some(m) = browser.script(&href("a.model")).await.as_str() {
                break m.to_string();
            }
        }
        assert!(Instant::now() < deadline, "no model row appeared\n{}", p.log_text());
        assert!(!tune.is_finished(), "the tune ended before its model row showed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    browser.goto(&format!("{base}{model_link}")).await;

    // The page's own script redraws the chart: count points without reloading.
    let points =
        "const s = document.querySelector('#chart svg'); return s ? Number(s.dataset.points) : -1";
    let marker = "return window.__same_page = window.__same_page || Math.random()";
    let page_id = browser.script(marker).await;
    let mut seen = vec![browser.script(points).await.as_i64().unwrap()];
    let mut shot = None;
    while !tune.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let still_live =
            browser.script("return document.querySelector('#chart').dataset.live").await;
        if still_live != "on" {
            break;
        }
        let n = browser.script(points).await.as_i64().unwrap();
        if n > *seen.last().unwrap() {
            assert_eq!(browser.script(marker).await, page_id, "updated in place, not reloaded");
            seen.push(n);
            // Mid-run, with a curve worth looking at, for the README.
            if shot.is_none() && n >= 60 {
                shot = Some(browser.screenshot().await);
            }
        }
    }
    let status = tune.await.unwrap().unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    assert_eq!(status, "successful");
    assert!(seen.len() >= 3, "the curve gained points while training: {seen:?}");
    // The finished page: the script reloads it with the final status and files.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = browser.script("return document.getElementById('status').textContent").await;
        if text == "successful" {
            break;
        }
        assert!(Instant::now() < deadline, "page still says {text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let files = browser.script("return document.body.innerText").await;
    assert!(files.as_str().unwrap().contains("model.safetensors"), "{files}");
    let png = shot.unwrap_or(browser.screenshot().await);
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let out = std::env::var("DASHBOARD_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| p.data_dir.join("dashboard.png"));
    std::fs::write(&out, &png).unwrap();
    println!("curve points seen: {seen:?}; screenshot {}", out.display());
    browser.close().await;
}

/// Startup refuses a taken dashboard port and a login that would expire at once, naming
/// the setting that fixes each, before anything else is started.
#[test]
fn bad_dashboard_settings_stop_startup_with_the_setting_named() {
    let scratch = Scratch::new("pgmld-dashboard-bad");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let args = |dash: &str| {
        vec![
            "--upstream".into(),
            support::UPSTREAM.into(),
            "--dashboard-listen".into(),
            dash.into(),
        ]
    };
    let (code, e) = start_failing(&scratch.0, &args(&addr), &[]);
    assert_ne!(code, Some(0), "{e}");
    assert!(e.contains(&addr) && e.contains("--dashboard-listen HOST:PORT"), "{e}");
    let (code, e) =
        start_failing(&scratch.0, &args("127.0.0.1:0"), &[("PGMLD_DASHBOARD_SESSION_HOURS", "0")]);
    assert_ne!(code, Some(0), "{e}");
    assert!(e.contains("dashboard_session_hours must be at least 1"), "{e}");
}
