//! The routes: the login form, the pages (projects, a project's models, a model with its
//! live curve, files and lineage, jobs), the live JSON a running model's page polls, and
//! the embedded assets. Every page answer carries headers that keep it out of frames and
//! caches and allow only the dashboard's own script and style.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minijinja::Environment;
use pgmld_upstream::Connector;
use serde::Deserialize;
use serde_json::json;
use tokio_postgres::Client;

use crate::chart::{self, Series};
use crate::error::{Error, Result};
use crate::queries::{self, Curve, Viewer};
use crate::session::{self, Login, LoginError, Sessions};

/// What every request handler shares.
pub struct Inner {
    /// pgmld's own connections (page reads) and the upstream (logins).
    pub connector: Arc<Connector>,
    /// Logged-in roles.
    pub sessions: Sessions,
    /// The page templates, compiled in.
    pub templates: Environment<'static>,
    /// The login form's database when the user leaves it empty.
    pub database: String,
}

/// The router's state.
pub type App = Arc<Inner>;

/// The dashboard's routes over `app`.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(projects_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/projects/{id}", get(project_page))
        .route("/models/{id}", get(model_page))
        .route("/models/{id}/live", get(model_live))
        .route("/jobs", get(jobs_page))
        .route("/static/{file}", get(asset))
        .fallback(not_found)
        .with_state(app)
}

/// The templates, from `templates/` at build time.
pub fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, text) in [
        ("base.html", include_str!("../templates/base.html")),
        ("login.html", include_str!("../templates/login.html")),
        ("projects.html", include_str!("../templates/projects.html")),
        ("project.html", include_str!("../templates/project.html")),
        ("model.html", include_str!("../templates/model.html")),
        ("jobs.html", include_str!("../templates/jobs.html")),
        ("error.html", include_str!("../templates/error.html")),
    ] {
        // The templates are part of the binary: a syntax error fails the unit tests.
        if let Err(e) = env.add_template(name, text) {
            tracing::error!("dashboard template {name}: {e}");
        }
    }
    env.add_filter("duration", duration);
    env.add_filter("bytes", bytes);
    env
}

/// `75.4` → `1m 15s`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `1536` → `1.5 KiB`.
fn bytes(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// A page answer with the dashboard's security headers.
fn page(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    r
}

/// A template context from JSON (every page value is serde-serialisable).
fn ctx(v: serde_json::Value) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

fn render(app: &App, name: &str, ctx: minijinja::Value) -> Result<String> {
    let render_error =
        |e: minijinja::Error| Error::Render { page: name.into(), message: e.to_string() };
    app.templates.get_template(name).and_then(|t| t.render(ctx)).map_err(render_error)
}

/// The answer for a failed page request: the login page for a missing session, else the
/// error page.
fn failed(app: &App, e: Error, viewer: Option<&Viewer>) -> Response {
    if let Error::LoggedOut = e {
        return Redirect::to("/login").into_response();
    }
    if matches!(e, Error::Postgres(_) | Error::Render { .. }) {
        tracing::warn!("dashboard: {e}");
    }
    let body = render(
        app,
        "error.html",
        ctx(json!({ "viewer": viewer, "status": e.status().as_u16(), "message": e.to_string() })),
    )
    .unwrap_or_else(|r| r.to_string());
    page(e.status(), body)
}

/// The viewer behind the request's cookie, with pgmld's shared connection to its database.
async fn viewer(app: &App, headers: &HeaderMap) -> Result<(Arc<Client>, Viewer)> {
    let token = session::token(headers).ok_or(Error::LoggedOut)?;
    let login = app.sessions.get(&token).ok_or(Error::LoggedOut)?;
    let client = app.connector.shared(&login.database).await?;
    let v = queries::viewer(&client, &login.role, &login.database).await?;
    Ok((client, v))
}

/// Runs a page: its viewer, then `body`, rendered or turned into the error page.
async fn serve<F, Fut>(app: App, headers: HeaderMap, body: F) -> Response
where
    F: FnOnce(App, Arc<Client>, Viewer) -> Fut,
    Fut: std::future::Future<Output = Result<String>>,
{
    match viewer(&app, &headers).await {
        Err(e) => failed(&app, e, None),
        Ok((client, v)) => match body(app.clone(), client, v.clone()).await {
            Ok(html) => page(StatusCode::OK, html),
            Err(e) => failed(&app, e, Some(&v)),
        },
    }
}

async fn projects_page(State(app): State<App>, headers: HeaderMap) -> Response {
    serve(app, headers, |app, c, v| async move {
        let projects = queries::projects(&c, &v).await?;
        render(&app, "projects.html", ctx(json!({ "viewer": v, "projects": projects })))
    })
    .await
}

async fn project_page(State(app): State<App>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    serve(app, headers, |app, c, v| async move {
        let project = queries::project_by_id(&c, &v, id).await?;
        let models = queries::models_of(&c, &v, id).await?;
        render(
            &app,
            "project.html",
            ctx(json!({ "viewer": v, "project": project, "models": models })),
        )
    })
    .await
}

fn curve_svg(curve: &Curve) -> String {
    chart::svg(
        &[
            Series { name: "train loss", class: "loss", points: &curve.loss },
            Series { name: "eval loss", class: "eval", points: &curve.eval_loss },
        ],
        curve.max_steps,
    )
}

async fn model_page(State(app): State<App>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    serve(app, headers, |app, c, v| async move {
        let model = queries::model_by_id(&c, &v, id).await?;
        let curve = queries::curve(&c, &v, id).await?;
        let files = queries::files_of(&c, &v, id).await?;
        let hub = queries::hub_push(&c, &v, id).await?;
        let job = queries::job_of(&c, &v, id).await?;
        // The base model links to its page when it is a stored model (`pgml:<id>`).
        let base_model_id = model
            .base_model
            .as_deref()
            .and_then(|b| b.strip_prefix("pgml:"))
            .and_then(|n| n.parse::<i64>().ok());
        let chart = curve_svg(&curve);
        render(
            &app,
            "model.html",
            ctx(json!({ "viewer": v, "model": model, "curve": curve, "chart": chart, "files": files, "hub": hub, "job": job, "base_model_id": base_model_id })),
        )
    })
    .await
}

/// What a running model's page polls: status, progress and the chart's new markup.
async fn model_live(State(app): State<App>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    let answer = async {
        let (c, v) = viewer(&app, &headers).await?;
        let model = queries::model_by_id(&c, &v, id).await?;
        let curve = queries::curve(&c, &v, id).await?;
        Ok::<_, Error>(json!({
            "status": model.status,
            "progress": curve.progress,
            "step": curve.step,
            "max_steps": curve.max_steps,
            "eta": curve.eta_seconds.map(duration),
            "points": curve.loss.len() + curve.eval_loss.len(),
            "chart": curve_svg(&curve),
        }))
    };
    match answer.await {
        Ok(body) => {
            let mut r = Json(body).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => (e.status(), Json(json!({"error": e.to_string()}))).into_response(),
    }
}

async fn jobs_page(State(app): State<App>, headers: HeaderMap) -> Response {
    serve(app, headers, |app, c, v| async move {
        let jobs = queries::jobs(&c, &v).await?;
        // Reload every few seconds while something runs, so progress bars move.
        let reload =
            jobs.iter().any(|j| j.status == "running" || j.status == "queued").then_some(5);
        render(&app, "jobs.html", ctx(json!({ "viewer": v, "jobs": jobs, "reload": reload })))
    })
    .await
}

async fn login_page(State(app): State<App>) -> Response {
    login_form(&app, StatusCode::OK, None, "", "")
}

fn login_form(
    app: &App,
    status: StatusCode,
    error: Option<String>,
    user: &str,
    db: &str,
) -> Response {
    let database = if db.is_empty() { app.database.as_str() } else { db };
    match render(
        app,
        "login.html",
        ctx(json!({ "error": error, "user": user, "database": database })),
    ) {
        Ok(html) => page(status, html),
        Err(e) => failed(app, e, None),
    }
}

/// The login form's fields.
#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    #[serde(default)]
    database: String,
}

async fn login(State(app): State<App>, Form(form): Form<LoginForm>) -> Response {
    let database = match form.database.trim() {
        "" => app.database.clone(),
        d => d.to_string(),
    };
    let upstream = app.connector.upstream();
    match session::verify(upstream, &database, &form.user, &form.password).await {
        Ok(()) => {
            tracing::info!(role = %form.user, database = %database, "dashboard login");
            let token = app.sessions.create(Login { role: form.user, database });
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&app.sessions.cookie(&token)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            tracing::info!(role = %form.user, database = %database, "dashboard login refused: {e}");
            // Slows down password guessing a little; the upstream's own limits still apply.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let status = match e {
                LoginError::Unreachable(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::UNAUTHORIZED,
            };
            login_form(&app, status, Some(e.to_string()), &form.user, &database)
        }
    }
}

async fn logout(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(token) = session::token(&headers) {
        app.sessions.remove(&token);
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "style.css" => (include_str!("../static/style.css"), "text/css; charset=utf-8"),
        "dashboard.js" => {
            (include_str!("../static/dashboard.js"), "text/javascript; charset=utf-8")
        }
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

async fn not_found(State(app): State<App>) -> Response {
    failed(&app, Error::NotFound("this page".into()), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compile_and_render() {
        let env = templates();
        for name in [
            "base.html",
            "login.html",
            "projects.html",
            "project.html",
            "model.html",
            "jobs.html",
            "error.html",
        ] {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
        let html = env
            .get_template("login.html")
            .unwrap()
            .render(ctx(json!({ "error": "bad <b>", "user": "a\"b", "database": "db" })))
            .unwrap();
        assert!(html.contains("bad &lt;b&gt;"), "escaped: {html}");
        assert!(
            html.contains("a&quot;b") || html.contains("a&#34;b") || html.contains("a&#x22;b"),
            "{html}"
        );
    }

    #[test]
    fn filters_read_well() {
        assert_eq!(duration(75.4), "1m 15s");
        assert_eq!(duration(3.0), "3s");
        assert_eq!(duration(7300.0), "2h 01m");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12), "12 B");
    }
}
