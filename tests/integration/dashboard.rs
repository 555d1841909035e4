//! The dashboard on the admin listener, over real sockets: the login cookie, a wrong token
//! getting nothing, cross-site and CSRF-less actions refused, every view in the access trail,
//! and the Now page's live figures. `dashboard_browser` drives the same pages in Chromium.

use std::sync::Arc;

use holdfast::ops::admin::Admin;
use holdfast::ops::admin::api::AdminState;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::common::*;
use crate::fake_upstream::FakeUpstream;

const TOKEN: &str = "dashboard-test-admin-token";
const CANARY: &str = "canary prompt 7f3e: what is the holdfast dashboard for?";

/// A proxy in front of the fake, and its admin listener with the dashboard.
struct Dash {
    url: String,
    proxy: Proxy,
    upstream: FakeUpstream,
}

async fn start_dashboard(config: holdfast::config::Config, upstream: FakeUpstream) -> Dash {
    let proxy = start_proxy(config).await;
    let admin = Arc::new(Admin::open(proxy.state.store.clone()).unwrap());
    let state = AdminState::with_dashboard(
        admin,
        zeroize::Zeroizing::new(TOKEN.to_owned()),
        1 << 20,
        Some(proxy.state.clone()),
        false,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(holdfast::ops::admin::api::run(
        holdfast::edge::server::Listener::Tcp(listener),
        None,
        state,
        holdfast::edge::server::ServerLimits::default(),
        std::future::pending(),
    ));
    Dash { url, proxy, upstream }
}

async fn start() -> Dash {
    let upstream = FakeUpstream::start().await;
    start_dashboard(config_for(&upstream.base_url()), upstream).await
}

/// Asks the proxy `prompt`; returns its `x-holdfast-cache`.
async fn ask(dash: &Dash, prompt: &str) -> String {
    let response = http()
        .post(format!("{}/v1/chat/completions", dash.proxy.url))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    let cache = response.headers().get("x-holdfast-cache").map(|v| v.to_str().unwrap().to_owned());
    response.bytes().await.unwrap();
    cache.unwrap_or_default()
}

/// A logged-in browser: its cookie and CSRF token, and the Origin its page has.
struct Browser {
    url: String,
    cookie: String,
    csrf: String,
}

impl Browser {
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        http().get(format!("{}{path}", self.url)).header("cookie", &self.cookie).header("sec-fetch-site", "same-origin")
    }

    /// A POST as the dashboard page sends it: same origin, cookie, CSRF token.
    fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        http()
            .post(format!("{}{path}", self.url))
            .header("cookie", &self.cookie)
            .header("origin", &self.url)
            .header("sec-fetch-site", "same-origin")
            .header("x-csrf-token", &self.csrf)
            .json(body)
    }
}

async fn login_response(url: &str, token: &str) -> reqwest::Response {
    http()
        .post(format!("{url}/ui/api/login"))
        .header("origin", url)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap()
}

async fn login(url: &str) -> Browser {
    let response = login_response(url, TOKEN).await;
    assert_eq!(response.status(), 200);
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    Browser { url: url.to_owned(), cookie, csrf: body["csrf"].as_str().unwrap().to_owned() }
}

async fn json_of(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn trail(browser: &Browser) -> Vec<Value> {
    let (status, body) = json_of(browser.get("/ui/api/trail")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["first_broken"], Value::Null, "{body}");
    body["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn login_sets_an_http_only_same_site_strict_cookie_scoped_to_the_dashboard() {
    let dash = start().await;
    let page = http().get(format!("{}/ui", dash.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers: HeaderMap = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(html.contains("/ui/assets/app.js") && !html.contains("http://") && !html.contains("https://"), "no CDN");
    for asset in ["app.js", "app.css", "icon.svg"] {
        let r = http().get(format!("{}/ui/assets/{asset}", dash.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
    }

    let response = login_response(&dash.url, TOKEN).await;
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "a plain-HTTP listener cannot use a Secure cookie: {cookie}");
    assert!(!cookie.contains(TOKEN), "the cookie is a session id, not the token");
    let body: Value = response.json().await.unwrap();
    assert!(body["actor"].as_str().unwrap().contains("via dashboard"), "{body}");
    let browser = Browser {
        url: dash.url.clone(),
        cookie: cookie.split(';').next().unwrap().to_owned(),
        csrf: body["csrf"].as_str().unwrap().to_owned(),
    };
    let (status, session) = json_of(browser.get("/ui/api/session")).await;
    assert_eq!((status, session["csrf"].as_str()), (200, Some(browser.csrf.as_str())));

    let (status, _) = json_of(browser.post("/ui/api/logout", &json!({}))).await;
    assert_eq!(status, 200);
    let (status, _) = json_of(browser.get("/ui/api/session")).await;
    assert_eq!(status, 401, "the session ends at logout, server side");
}

#[tokio::test]
async fn a_wrong_token_never_reaches_any_data() {
    let dash = start().await;
    assert_eq!(ask(&dash, CANARY).await, "miss");
    let address = {
        let store = &dash.proxy.state.store;
        let mut found = None;
        store.for_each_meta(|a, _| found = Some(a.to_hex())).unwrap();
        found.unwrap()
    };
    let wrong = login_response(&dash.url, "not-the-token").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none(), "no session for a wrong token");
    let fake_session = Browser { url: dash.url.clone(), cookie: "holdfast_ui=00ff".into(), csrf: "00ff".into() };
    let no_session = Browser { url: dash.url.clone(), cookie: String::new(), csrf: String::new() };
    for browser in [&fake_session, &no_session] {
        for path in [
            "/ui/api/now",
            "/ui/api/audit?q=canary",
            &format!("/ui/api/entry/{address}"),
            "/ui/api/trail",
            "/ui/api/keys",
        ] {
            let (status, body) = json_of(browser.get(path)).await;
            assert_eq!(status, 401, "{path}: {body}");
            assert!(!body.to_string().contains("canary") && !body.to_string().contains("echo"), "{path}: {body}");
        }
        let (status, _) = json_of(browser.post("/ui/api/purge", &json!({"all": true, "confirm": "purge"}))).await;
        assert!(status == 401 || status == 403, "{status}");
    }
    assert_eq!(dash.proxy.state.store.stats().entries, 1, "nothing was purged");
    // Guessing is slowed down: after five failures even the right token waits.
    for _ in 0..4 {
        assert_eq!(login_response(&dash.url, "guess").await.status(), 401);
    }
    let held = login_response(&dash.url, TOKEN).await;
    assert_eq!(held.status(), 429);
    assert!(held.headers().get("retry-after").is_some());
}

#[tokio::test]
async fn a_cross_site_post_is_refused() {
    let dash = start().await;
    ask(&dash, CANARY).await;
    let browser = login(&dash.url).await;
    let purge = json!({"all": true, "confirm": "purge"});
    let attempts = [
        browser.post("/ui/api/purge", &purge).header("origin", "http://evil.example"),
        browser.post("/ui/api/purge", &purge).header("sec-fetch-site", "cross-site"),
        browser.post("/ui/api/purge", &purge).header("sec-fetch-site", "same-site"),
        browser.post("/ui/api/purge", &purge).header("origin", "null"),
    ];
    for attempt in attempts {
        let (status, body) = json_of(attempt).await;
        assert_eq!(status, 403, "{body}");
    }
    // A login from another site (login CSRF) is refused too.
    let cross_login = http()
        .post(format!("{}/ui/api/login", dash.url))
        .header("origin", "http://evil.example")
        .json(&json!({"token": TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_login.status(), 403);
    assert_eq!(dash.proxy.state.store.stats().entries, 1, "nothing was purged");
    // The same request from the dashboard's own page goes through.
    let (status, body) = json_of(browser.post("/ui/api/purge", &purge)).await;
    assert_eq!((status, body["purged"].as_u64()), (200, Some(1)), "{body}");
}

#[tokio::test]
async fn an_action_without_its_csrf_token_is_refused() {
    let dash = start().await;
    ask(&dash, CANARY).await;
    let browser = login(&dash.url).await;
    let keys = |b: &Browser| b.get("/ui/api/keys");
    let without = http()
        .post(format!("{}/ui/api/keys/rotate", dash.url))
        .header("cookie", &browser.cookie)
        .header("origin", &dash.url)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"reencrypt": true}));
    let (status, body) = json_of(without).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("CSRF"), "{body}");
    let other = login(&dash.url).await;
    let (status, _) =
        json_of(browser.post("/ui/api/keys/rotate", &json!({})).header("x-csrf-token", &other.csrf)).await;
    assert_eq!(status, 403, "another session's CSRF token does not do");
    let (_, listed) = json_of(keys(&browser)).await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1, "no rotation happened: {listed}");

    let rotated = browser.post("/ui/api/keys/rotate", &json!({"reencrypt": true})).send().await.unwrap();
    assert_eq!(rotated.status(), 200);
    let lines = rotated.text().await.unwrap();
    let last: Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(last["result"]["active"], 2, "{lines}");
    assert_eq!(last["result"]["resealed"], 1, "{lines}");
    assert!(lines.contains("\"progress\":[1,1]"), "progress is reported: {lines}");
    let (_, listed) = json_of(keys(&browser)).await;
    let records: Vec<u64> = listed["keys"].as_array().unwrap().iter().map(|k| k["records"].as_u64().unwrap()).collect();
    assert_eq!(records, [0, 1], "{listed}");
    let (status, retired) = json_of(browser.post("/ui/api/keys/retire", &json!({"id": 1}))).await;
    assert_eq!((status, retired["retired"].as_u64()), (200, Some(1)), "{retired}");
}

#[tokio::test]
async fn each_view_of_stored_prompts_is_written_to_the_access_trail() {
    let dash = start().await;
    ask(&dash, CANARY).await;
    ask(&dash, "an unrelated question").await;
    let browser = login(&dash.url).await;
    let (status, all) = json_of(browser.get("/ui/api/audit")).await;
    assert_eq!((status, all["count"].as_u64()), (200, Some(2)), "{all}");
    // Keyless clients share one credential namespace; the list shows its hash prefix.
    let tenant = all["entries"][0]["tenant"].as_str().unwrap().trim_end_matches('…').to_owned();
    let (_, listed) = json_of(browser.get(&format!("/ui/api/audit?model=gpt-*&tenant={tenant}"))).await;
    assert_eq!(listed["count"], 2, "{listed}");
    for other in ["tenant=shared", "model=claude-*", "provider=fake-anthropic", "until=1000"] {
        let (_, none) = json_of(browser.get(&format!("/ui/api/audit?{other}"))).await;
        assert_eq!(none["count"], 0, "{other}: {none}");
    }
    let (_, found) = json_of(browser.get("/ui/api/audit?q=CANARY+prompt+7f3e")).await;
    assert_eq!(found["count"], 1, "{found}");
    let address = found["entries"][0]["address"].as_str().unwrap().to_owned();
    let (status, entry) = json_of(browser.get(&format!("/ui/api/entry/{address}"))).await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["request"]["messages"][0]["content"], CANARY);
    assert!(entry["response"].to_string().contains(&format!("echo: {CANARY}")), "{entry}");

    let trail = trail(&browser).await;
    let commands: Vec<(&str, &str)> =
        trail.iter().map(|e| (e["command"].as_str().unwrap(), e["actor"].as_str().unwrap())).collect();
    for wanted in ["audit list", "audit search (text not recorded)", &format!("audit show {address}")] {
        let hit = commands.iter().find(|(c, _)| c == &wanted);
        let (_, actor) = hit.unwrap_or_else(|| panic!("{wanted} not in the trail: {commands:?}"));
        assert!(actor.contains("via dashboard") && !actor.contains(TOKEN), "{actor}");
    }
    let search = trail.iter().find(|e| e["command"] == "audit search (text not recorded)").unwrap();
    assert!(!search.to_string().contains("7f3e"), "the search text stays out of the trail");
    assert_eq!(trail[0]["command"], format!("audit show {address}"), "newest first");
    assert_eq!(trail[0]["addresses"], json!([address]));
}

#[tokio::test]
async fn the_now_page_shows_rates_by_result_an_open_breaker_and_the_outage_share() {
    let upstream = FakeUpstream::start().await;
    let mut config = config_for(&upstream.base_url());
    for p in &mut config.providers {
        p.breaker.failures = 1;
        p.breaker.cooldown = std::time::Duration::from_secs(600);
    }
    let dash = start_dashboard(config, upstream).await;
    assert_eq!(ask(&dash, CANARY).await, "miss");
    assert_eq!(ask(&dash, CANARY).await, "miss", "fallback mode asks upstream while it answers");
    let browser = login(&dash.url).await;
    let (_, now) = json_of(browser.get("/ui/api/now")).await;
    assert_eq!(now["outage"], Value::Null, "no breaker open: {now}");
    assert_eq!(now["providers"][0]["breaker"], "closed");
    assert_eq!(now["store"]["entries"], 1, "{now}");
    assert_eq!(now["latency"]["fake-openai"]["count"], 2, "{now}");

    dash.upstream.down().await;
    assert_eq!(ask(&dash, CANARY).await, "stale", "the stored answer, upstream being down");
    let never_asked = ask(&dash, "never asked before").await;
    assert_ne!(never_asked, "stale", "nothing stored for it");
    let (_, now) = json_of(browser.get("/ui/api/now")).await;
    let breaker = now["breakers"].as_array().unwrap().iter().find(|b| b["key"] == "fake-openai").unwrap();
    assert_eq!(breaker["state"], "open", "{now}");
    assert!(breaker["recent_failures"].as_u64().unwrap() >= 1);
    assert_eq!(now["providers"][0]["breaker"], "open");
    assert!(now["failures"]["fake-openai"].as_object().is_some_and(|f| !f.is_empty()), "{now}");
    let before = now["outage"].clone();
    let count = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no outage {k}: {v}"));
    assert_eq!(ask(&dash, CANARY).await, "stale");
    assert_eq!(ask(&dash, CANARY).await, "stale");
    let (_, now) = json_of(browser.get("/ui/api/now")).await;
    let outage = &now["outage"];
    assert_eq!(count(outage, "requests"), count(&before, "requests") + 2, "{now}");
    assert_eq!(count(outage, "from_store"), count(&before, "from_store") + 2, "{now}");
    // The outage is dated to the second before the breaker opened, so in a test this fast the
    // misses just before may count too: check the share is what the counts say.
    let share = count(outage, "from_store") as f64 / count(outage, "requests") as f64;
    assert!((outage["share"].as_f64().unwrap() - share).abs() < 1e-9, "{now}");
    let minute: Vec<[u64; 6]> = serde_json::from_value(now["minute"]["bins"].clone()).unwrap();
    let total = minute.iter().fold([0u64; 6], |mut acc, b| {
        acc.iter_mut().zip(b).for_each(|(a, n)| *a += n);
        acc
    });
    let column = |name: &str| now["minute"]["results"].as_array().unwrap().iter().position(|r| r == name).unwrap();
    assert_eq!((total[column("miss")], total[column("stale")], total[column("error")]), (2, 3, 1), "{total:?}");
    assert_eq!(total.iter().sum::<u64>(), 6, "every request counted once: {total:?}");
    let hour: Vec<[u64; 6]> = serde_json::from_value(now["hour"]["bins"].clone()).unwrap();
    assert_eq!(hour.len(), 360, "an hour in 10-second bins");
}
