//! Who the current request comes from: its client's address (through
//! trusted proxies only), the country of that address, and its
//! `User-Agent`. The country is recorded in the tokens issued for the
//! request (`auth_country`), so that resource servers can tell when a
//! token is used from elsewhere; all three go into the security events of
//! the account it acts on. A middleware looks the client up once per
//! request and keeps the answer in a task-local for the handlers below it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use stepup_guard::client_ip::client_ip;

use crate::server::ServerState;

/// The current request's client, as far as the server can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Client {
    /// Its address.
    pub(crate) address: Option<IpAddr>,
    /// That address's country (ISO 3166-1 alpha-2), when located.
    pub(crate) country: Option<String>,
    /// Its `User-Agent`, without control characters, cut short.
    pub(crate) user_agent: Option<String>,
}

/// The longest `User-Agent` kept.
const USER_AGENT_CHARS: usize = 200;

tokio::task_local! {
    static CLIENT: Client;
}

/// The current request's client (nothing known outside a request).
pub(crate) fn client() -> Client {
    CLIENT.try_with(Clone::clone).unwrap_or_default()
}

/// The country of the current request's client, if known.
pub(crate) fn client_country() -> Option<String> {
    CLIENT.try_with(|c| c.country.clone()).ok().flatten()
}

/// Looks the client up and runs the rest of the request with it.
pub(crate) async fn locate_client(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    let address = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|peer| {
        client_ip(
            peer.0.ip(),
            request.headers(),
            &state.config.trusted_proxies,
            state.config.risk.forwarded_header,
        )
    });
    let country = state
        .geo
        .as_ref()
        .zip(address)
        .and_then(|(geo, ip)| geo.lookup(ip).country.map(|c| c.as_str().to_owned()));
    let user_agent = request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .filter(|c| !c.is_control())
                .take(USER_AGENT_CHARS)
                .collect::<String>()
        })
        .filter(|ua| !ua.is_empty());
    let client = Client {
        address,
        country,
        user_agent,
    };
    CLIENT.scope(client, next.run(request)).await
}
