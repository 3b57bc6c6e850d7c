//! The country a request comes from, recorded in the tokens issued for it
//! (`auth_country`), so that resource servers can tell when a token is
//! used from elsewhere. A middleware looks the client address up once per
//! request (through trusted proxies only) and keeps the answer in a
//! task-local for the handlers below it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use stepup_guard::client_ip::client_ip;

use crate::server::ServerState;

tokio::task_local! {
    static CLIENT_COUNTRY: Option<String>;
}

/// The country of the current request's client, if known.
pub(crate) fn client_country() -> Option<String> {
    CLIENT_COUNTRY.try_with(Clone::clone).ok().flatten()
}

/// Looks the client up and runs the rest of the request with its country.
pub(crate) async fn locate_client(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    let country = state.geo.as_ref().and_then(|geo| {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip();
        let ip = client_ip(
            peer,
            request.headers(),
            &state.config.trusted_proxies,
            state.config.risk.forwarded_header,
        );
        geo.lookup(ip).country.map(|c| c.as_str().to_owned())
    });
    CLIENT_COUNTRY.scope(country, next.run(request)).await
}
