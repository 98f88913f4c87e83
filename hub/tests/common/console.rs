//! A console client as a browser's would be: a WebSocket to the hub with a ticket, and a
//! small RFB client (VNC authentication, one framebuffer update) to speak to the VM's screen.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::web::WebClient;
use super::within;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Waits until what a session passed on from the VM stops growing (the buffers on the way
/// are full, for a client that reads nothing): how much it passed on. Nothing announces
/// "stopped growing", so this watches the counter until it holds still.
pub async fn until_flow_stops(
    session: &proxlab_hub::domain::consoles::sessions::ConsoleSession,
) -> u64 {
    let passed_on = || {
        session
            .bytes_from_vm
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    within("the flow to stop", async {
        let mut last = passed_on();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let now = passed_on();
            if now == last {
                return now;
            }
            last = now;
        }
    })
    .await
}

/// Asks the hub for a console ticket: the answer's status and body.
pub async fn ticket(client: &WebClient, vmid: u32, kind: &str) -> (u16, Value) {
    let response = client
        .api_post_json(
            &format!("/api/v1/vms/{vmid}/console"),
            &json!({"kind": kind}),
        )
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// How a WebSocket to a console went.
pub enum Opened {
    Socket(Box<ConsoleSocket>),
    /// The upgrade was refused with this HTTP status.
    Refused(u16),
}

impl Opened {
    pub fn socket(self) -> ConsoleSocket {
        match self {
            Opened::Socket(socket) => *socket,
            Opened::Refused(status) => panic!("the upgrade was refused with {status}"),
        }
    }
}

/// An open console WebSocket, read as a byte stream.
pub struct ConsoleSocket {
    socket: Socket,
    pending: Vec<u8>,
    /// Text messages not read yet.
    texts: std::collections::VecDeque<String>,
    /// The close frame's code and reason, once one came.
    pub closed: Option<(u16, String)>,
}

/// Opens the WebSocket `url` with a small socket receive buffer (64 KiB, no autotuning), so
/// that what a client that stops reading holds is bounded by the hub's side alone.
pub async fn open_small_buffered(client: &WebClient, url: &str) -> ConsoleSocket {
    let addr: std::net::SocketAddr = client.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let request = request(client, url, None);
    let (socket, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    ConsoleSocket {
        socket,
        pending: Vec::new(),
        texts: Default::default(),
        closed: None,
    }
}

/// The upgrade request for `url`, as `client`, with `origin` if given.
fn request(
    client: &WebClient,
    url: &str,
    origin: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let address = client.base.replacen("http://", "ws://", 1) + url;
    let mut request = address.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
    if let Some(token) = &client.bearer {
        headers.insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    if let Some(origin) = origin {
        headers.insert("Origin", HeaderValue::from_str(origin).unwrap());
    }
    request
}

/// Opens the WebSocket `url` (from a ticket) as `client`, with `origin` if given.
pub async fn open(client: &WebClient, url: &str, origin: Option<&str>) -> Opened {
    match tokio_tungstenite::connect_async(request(client, url, origin)).await {
        Ok((socket, response)) => {
            assert_eq!(
                response.headers().get("sec-websocket-protocol").unwrap(),
                "binary"
            );
            Opened::Socket(Box::new(ConsoleSocket {
                socket,
                pending: Vec::new(),
                texts: Default::default(),
                closed: None,
            }))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Opened::Refused(response.status().as_u16())
        }
        Err(err) => panic!("cannot open {url}: {err}"),
    }
}

impl ConsoleSocket {
    /// Waits for the next bytes; `false` once the socket closed (see [`Self::closed`]).
    async fn fill(&mut self) -> bool {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    self.pending.extend_from_slice(&bytes);
                    return true;
                }
                Some(Ok(Message::Text(text))) => {
                    self.texts.push_back(text.to_string());
                    return true;
                }
                Some(Ok(Message::Close(frame))) => {
                    self.closed = Some(frame.map_or((1005, String::new()), |frame| {
                        (u16::from(frame.code), frame.reason.to_string())
                    }));
                    return false;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    self.closed.get_or_insert((1006, String::new()));
                    return false;
                }
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            assert!(self.fill().await, "the console closed: {:?}", self.closed);
        }
        self.pending.drain(..n).collect()
    }

    /// Reads until the text read so far contains `needle`; returns all of it.
    pub async fn read_until(&mut self, needle: &str) -> String {
        let mut seen = Vec::new();
        loop {
            // Only the new bytes (and a needle's length before them) can complete a match.
            let from = seen.len().saturating_sub(needle.len());
            seen.append(&mut self.pending);
            if seen[from..]
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
            {
                return String::from_utf8_lossy(&seen).into_owned();
            }
            if !self.fill().await {
                let tail = &seen[seen.len().saturating_sub(2000)..];
                panic!(
                    "the console closed before {needle:?} came ({:?}); read last: {:?}",
                    self.closed,
                    String::from_utf8_lossy(tail)
                );
            }
        }
    }

    /// Waits for the next text message (JSON); panics if the socket closes first.
    pub async fn next_json(&mut self) -> Value {
        loop {
            if let Some(text) = self.texts.pop_front() {
                return serde_json::from_str(&text).unwrap();
            }
            assert!(
                self.fill().await,
                "the socket closed before a text message came: {:?}",
                self.closed
            );
        }
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.socket
            .send(Message::Text(value.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.socket
            .send(Message::Binary(Bytes::copy_from_slice(bytes)))
            .await
            .unwrap();
    }

    /// Sends without failing when the hub has closed already.
    pub async fn try_send(&mut self, bytes: &[u8]) {
        let _ = self
            .socket
            .send(Message::Binary(Bytes::copy_from_slice(bytes)))
            .await;
    }

    /// Waits for the hub to close the socket: its close code and reason.
    pub async fn close_frame(&mut self) -> (u16, String) {
        within("the console to close", async {
            while self.fill().await {
                self.pending.clear();
            }
        })
        .await;
        self.closed.clone().unwrap()
    }

    /// Closes from this side, as a browser leaving the page does.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
        while let Some(Ok(_)) = self.socket.next().await {}
    }

    /// Speaks RFB 3.8 with VNC authentication and asks for the whole screen: the desktop
    /// name, the screen size, and the raw pixels of the first update.
    pub async fn rfb_login(&mut self, password: &str) -> (String, (u16, u16), Vec<u8>) {
        let version = self.read_exact(12).await;
        assert_eq!(&version, b"RFB 003.008\n");
        self.send(b"RFB 003.008\n").await;
        let count = self.read_exact(1).await[0] as usize;
        let types = self.read_exact(count).await;
        assert!(types.contains(&2), "VNC authentication offered: {types:?}");
        self.send(&[2]).await;
        let challenge: [u8; 16] = self.read_exact(16).await.try_into().unwrap();
        self.send(&pve_sim::rfb::vnc_auth_response(password, &challenge))
            .await;
        let result = self.read_exact(4).await;
        assert_eq!(result, [0, 0, 0, 0], "VNC authentication failed");
        self.send(&[1]).await; // ClientInit: shared
        let init = self.read_exact(24).await;
        let width = u16::from_be_bytes([init[0], init[1]]);
        let height = u16::from_be_bytes([init[2], init[3]]);
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        let name = String::from_utf8(self.read_exact(name_len).await).unwrap();
        // FramebufferUpdateRequest, not incremental, of the whole screen.
        let mut request = vec![3, 0, 0, 0, 0, 0];
        request.extend_from_slice(&width.to_be_bytes());
        request.extend_from_slice(&height.to_be_bytes());
        self.send(&request).await;
        let header = self.read_exact(4).await;
        assert_eq!(header[0], 0, "a FramebufferUpdate");
        let rect = self.read_exact(12).await;
        let (w, h) = (
            u16::from_be_bytes([rect[4], rect[5]]),
            u16::from_be_bytes([rect[6], rect[7]]),
        );
        assert_eq!(&rect[8..12], &[0, 0, 0, 0], "raw encoding");
        let pixels = self.read_exact(usize::from(w) * usize::from(h) * 4).await;
        (name, (width, height), pixels)
    }
}
