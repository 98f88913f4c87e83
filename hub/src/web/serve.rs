//! The portal's listener: plain HTTP/1.1, or HTTPS where each connection speaks HTTP/2 or
//! HTTP/1.1 as the browser chooses (ALPN). Someone typing `http://` at an HTTPS portal is sent
//! to the `https://` address instead of getting a broken connection.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a client has to say anything, and to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests may run on after the hub is told to stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How the portal answers on its listener.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls {
        acceptor: TlsAcceptor,
        /// Where plain-HTTP visitors are sent (`https://…`), when the site's address is known.
        site_url: Option<String>,
    },
}

impl Transport {
    pub fn tls(server: Arc<rustls::ServerConfig>, site_url: Option<String>) -> Self {
        Self::Tls {
            acceptor: TlsAcceptor::from(server),
            site_url,
        }
    }
}

/// Serves `app` until `stopping` turns true, then lets open requests finish for a moment.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    transport: Transport,
    mut stopping: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let stop = async move {
        while !*stopping.borrow_and_update() {
            if stopping.changed().await.is_err() {
                break;
            }
        }
    };
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::warn!(%err, "cannot accept a portal connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let watcher = graceful.watcher();
        let app = app.clone();
        let transport = transport.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                app.clone().call(request)
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let result = match transport {
                Transport::Plain => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Transport::Tls { acceptor, site_url } => {
                    match accept_tls(stream, &acceptor).await {
                        Accepted::Tls(stream) => {
                            let connection = builder
                                .serve_connection_with_upgrades(TokioIo::new(*stream), service);
                            watcher.watch(connection.into_owned()).await
                        }
                        Accepted::PlainHttp(stream) => {
                            let redirect = hyper::service::service_fn(move |request| {
                                let response = redirect_to_https(&request, site_url.as_deref());
                                async move { Ok::<_, std::convert::Infallible>(response) }
                            });
                            let connection =
                                builder.serve_connection(TokioIo::new(stream), redirect);
                            watcher.watch(connection.into_owned()).await
                        }
                        Accepted::Failed(reason) => {
                            tracing::debug!(%remote, reason, "portal TLS connection refused");
                            return;
                        }
                    }
                }
            };
            if let Err(err) = result {
                tracing::debug!(%remote, %err, "portal connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("portal connections still open at shutdown were closed");
    }
}

enum Accepted {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    PlainHttp(TcpStream),
    Failed(&'static str),
}

/// Completes the TLS handshake, or recognises a plain HTTP request by its first byte.
async fn accept_tls(stream: TcpStream, acceptor: &TlsAcceptor) -> Accepted {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != TLS_HANDSHAKE => return Accepted::PlainHttp(stream),
        Ok(Ok(1)) => {}
        Ok(_) => return Accepted::Failed("closed before the handshake"),
        Err(_) => return Accepted::Failed("silent client"),
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Accepted::Tls(Box::new(stream)),
        Ok(Err(_)) => Accepted::Failed("handshake failed"),
        Err(_) => Accepted::Failed("handshake timed out"),
    }
}

/// `308 Permanent Redirect` to the same path over HTTPS: on the configured site address, or
/// on the host the visitor typed.
fn redirect_to_https<B>(request: &Request<B>, site_url: Option<&str>) -> Response<Body> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let base = match site_url {
        Some(url) => Some(url.trim_end_matches('/').to_owned()),
        None => request
            .headers()
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .filter(|host| is_plain_host(host))
            .map(|host| format!("https://{host}")),
    };
    let Some(base) = base else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from("This portal speaks HTTPS only: use https://\n"))
            .expect("a static response");
    };
    Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(header::LOCATION, format!("{base}{path}"))
        .body(Body::empty())
        .expect("a redirect response")
}

/// Whether a `Host` header is a bare host and port, safe to put in a redirect.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_visitors_are_sent_to_https() {
        let request = Request::builder()
            .uri("/classes?x=1")
            .header(header::HOST, "lab.school:8443")
            .body(())
            .unwrap();
        let response = redirect_to_https(&request, None);
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            response.headers()[header::LOCATION],
            "https://lab.school:8443/classes?x=1"
        );
        let response = redirect_to_https(&request, Some("https://lab.example/"));
        assert_eq!(
            response.headers()[header::LOCATION],
            "https://lab.example/classes?x=1"
        );
        let hostile = Request::builder()
            .uri("/")
            .header(header::HOST, "evil.example/@x")
            .body(())
            .unwrap();
        assert_eq!(
            redirect_to_https(&hostile, None).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
