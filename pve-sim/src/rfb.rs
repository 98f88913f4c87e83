//! A tiny RFB (VNC) server, as QEMU runs with `-vnc unix:...,password=on`: protocol 3.8
//! (3.3 and 3.7 accepted), VNC authentication against the password `qm vncproxy` set, and a
//! static screen that shows the VMID in large digits; the desktop name is `VM <vmid> (<name>)`.

use std::io::{self, Read, Write};

use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockEncrypt, KeyInit};

/// Screen size.
pub const WIDTH: u16 = 640;
pub const HEIGHT: u16 = 360;

/// The response VNC authentication expects: the challenge DES-encrypted with the password
/// (its first 8 bytes, zero-padded, each byte's bits reversed) as the key.
pub fn vnc_auth_response(password: &str, challenge: &[u8; 16]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (slot, byte) in key.iter_mut().zip(password.bytes()) {
        *slot = byte.reverse_bits();
    }
    let cipher = des::Des::new_from_slice(&key).expect("DES takes an 8-byte key");
    let mut out = *challenge;
    for block in out.chunks_mut(8) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    out
}

/// The client's pixel format (true colour only).
#[derive(Debug, Clone, Copy)]
struct PixelFormat {
    bits_per_pixel: u8,
    big_endian: bool,
    shifts: [u8; 3],
    maxes: [u16; 3],
}

impl PixelFormat {
    const SERVER: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        big_endian: false,
        shifts: [16, 8, 0],
        maxes: [255, 255, 255],
    };

    fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[0] = self.bits_per_pixel;
        out[1] = 24;
        out[2] = u8::from(self.big_endian);
        out[3] = 1;
        for i in 0..3 {
            out[4 + i * 2..6 + i * 2].copy_from_slice(&self.maxes[i].to_be_bytes());
        }
        out[10..13].copy_from_slice(&self.shifts);
        out
    }

    fn decode(bytes: &[u8; 16]) -> Self {
        let max = |i: usize| u16::from_be_bytes([bytes[4 + i * 2], bytes[5 + i * 2]]).max(1);
        PixelFormat {
            bits_per_pixel: bytes[0],
            big_endian: bytes[2] != 0,
            shifts: [bytes[10], bytes[11], bytes[12]],
            maxes: [max(0), max(1), max(2)],
        }
    }

    fn pixel(&self, rgb: [u8; 3], out: &mut Vec<u8>) {
        let mut value: u32 = 0;
        for (i, channel) in rgb.iter().enumerate() {
            let scaled = u32::from(*channel) * u32::from(self.maxes[i]) / 255;
            value |= scaled << self.shifts[i];
        }
        let bytes = usize::from(self.bits_per_pixel / 8).clamp(1, 4);
        let all = if self.big_endian {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        };
        if self.big_endian {
            out.extend_from_slice(&all[4 - bytes..]);
        } else {
            out.extend_from_slice(&all[..bytes]);
        }
    }
}

/// Which of a seven-segment digit's segments (a to g) are lit.
const SEGMENTS: [[bool; 7]; 10] = [
    [true, true, true, true, true, true, false],
    [false, true, true, false, false, false, false],
    [true, true, false, true, true, false, true],
    [true, true, true, true, false, false, true],
    [false, true, true, false, false, true, true],
    [true, false, true, true, false, true, true],
    [true, false, true, true, true, true, true],
    [true, true, true, false, false, false, false],
    [true, true, true, true, true, true, true],
    [true, true, true, true, false, true, true],
];

/// Whether pixel (x, y) is lit in the VMID banner.
fn lit(vmid: &str, x: usize, y: usize) -> bool {
    const DIGIT_W: usize = 48;
    const DIGIT_H: usize = 88;
    const GAP: usize = 16;
    const T: usize = 10;
    let width = vmid.len() * (DIGIT_W + GAP) - GAP;
    let left = (usize::from(WIDTH) - width) / 2;
    let top = (usize::from(HEIGHT) - DIGIT_H) / 2;
    if x < left || y < top || y >= top + DIGIT_H {
        return false;
    }
    let cell = (x - left) / (DIGIT_W + GAP);
    let (dx, dy) = ((x - left) % (DIGIT_W + GAP), y - top);
    let Some(digit) = vmid
        .as_bytes()
        .get(cell)
        .and_then(|c| (*c as char).to_digit(10))
    else {
        return false;
    };
    if dx >= DIGIT_W {
        return false;
    }
    let half = DIGIT_H / 2;
    let on = SEGMENTS[digit as usize];
    let horizontal = |row: usize| {
        dy + T / 2 >= row && dy < row + T / 2 && (T / 2..DIGIT_W - T / 2).contains(&dx)
    };
    let vertical = |col: usize, from: usize, to: usize| {
        dx + T / 2 >= col && dx < col + T / 2 && (from..to).contains(&dy)
    };
    (on[0] && horizontal(T / 2))
        || (on[1] && vertical(DIGIT_W - T / 2, 0, half))
        || (on[2] && vertical(DIGIT_W - T / 2, half, DIGIT_H))
        || (on[3] && horizontal(DIGIT_H - T / 2))
        || (on[4] && vertical(T / 2, half, DIGIT_H))
        || (on[5] && vertical(T / 2, 0, half))
        || (on[6] && horizontal(half))
}

fn read_exact<const N: usize>(stream: &mut impl Read) -> io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// What the server needs to know about its VM.
pub struct Screen {
    pub vmid: u32,
    pub name: String,
    /// The password currently accepted, if any.
    pub password: Option<String>,
}

/// Serves one client until it disconnects.
pub fn serve(
    stream: &mut (impl Read + Write),
    screen: &Screen,
    challenge: [u8; 16],
) -> io::Result<()> {
    stream.write_all(b"RFB 003.008\n")?;
    let version = read_exact::<12>(stream)?;
    let minor = match &version {
        b"RFB 003.003\n" => 3,
        b"RFB 003.007\n" => 7,
        b"RFB 003.008\n" => 8,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unsupported RFB version",
            ));
        }
    };
    if minor == 3 {
        stream.write_all(&2u32.to_be_bytes())?;
    } else {
        stream.write_all(&[1, 2])?;
        if read_exact::<1>(stream)? != [2] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "security type not offered",
            ));
        }
    }
    stream.write_all(&challenge)?;
    let response = read_exact::<16>(stream)?;
    let accepted = screen
        .password
        .as_deref()
        .is_some_and(|password| vnc_auth_response(password, &challenge) == response);
    if !accepted {
        stream.write_all(&1u32.to_be_bytes())?;
        if minor == 8 {
            let reason = b"Authentication failed";
            stream.write_all(&(reason.len() as u32).to_be_bytes())?;
            stream.write_all(reason)?;
        }
        return Ok(());
    }
    stream.write_all(&0u32.to_be_bytes())?;
    let _shared = read_exact::<1>(stream)?;
    let name = format!("VM {} ({})", screen.vmid, screen.name);
    let mut init = Vec::new();
    init.extend_from_slice(&WIDTH.to_be_bytes());
    init.extend_from_slice(&HEIGHT.to_be_bytes());
    init.extend_from_slice(&PixelFormat::SERVER.encode());
    init.extend_from_slice(&(name.len() as u32).to_be_bytes());
    init.extend_from_slice(name.as_bytes());
    stream.write_all(&init)?;

    let vmid = screen.vmid.to_string();
    let mut format = PixelFormat::SERVER;
    loop {
        let kind = match read_exact::<1>(stream) {
            Ok([kind]) => kind,
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(err) => return Err(err),
        };
        match kind {
            0 => {
                let message = read_exact::<19>(stream)?;
                let mut pf = [0u8; 16];
                pf.copy_from_slice(&message[3..]);
                format = PixelFormat::decode(&pf);
            }
            2 => {
                let header = read_exact::<3>(stream)?;
                let count = usize::from(u16::from_be_bytes([header[1], header[2]]));
                let mut encodings = vec![0u8; count * 4];
                stream.read_exact(&mut encodings)?;
            }
            3 => {
                let request = read_exact::<9>(stream)?;
                // The screen never changes, so incremental requests get nothing.
                if request[0] == 0 {
                    send_screen(stream, &vmid, format)?;
                }
            }
            4 => drop(read_exact::<7>(stream)?),
            5 => drop(read_exact::<5>(stream)?),
            6 => {
                let header = read_exact::<7>(stream)?;
                let len = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
                io::copy(&mut Read::by_ref(stream).take(len as u64), &mut io::sink())?;
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unknown client message",
                ));
            }
        }
    }
}

fn send_screen(stream: &mut impl Write, vmid: &str, format: PixelFormat) -> io::Result<()> {
    let mut out = Vec::with_capacity(16 + usize::from(WIDTH) * usize::from(HEIGHT) * 4);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&1u16.to_be_bytes());
    for value in [0u16, 0, WIDTH, HEIGHT] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    out.extend_from_slice(&0i32.to_be_bytes());
    for y in 0..usize::from(HEIGHT) {
        for x in 0..usize::from(WIDTH) {
            let rgb = if lit(vmid, x, y) {
                [240, 240, 240]
            } else {
                [24, 48, 96]
            };
            format.pixel(rgb, &mut out);
        }
    }
    stream.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnc_auth_matches_an_independent_des() {
        // Computed with OpenSSL's DES-ECB and the bit-reversed key of "secret12".
        let challenge: [u8; 16] = std::array::from_fn(|i| i as u8);
        let expected = hex("adcd997f8e16fee575e973f93c2b62b4");
        assert_eq!(vnc_auth_response("secret12", &challenge).to_vec(), expected);
        // Only the first 8 characters count, as in every VNC server.
        assert_eq!(
            vnc_auth_response("secret12-and-more", &challenge),
            vnc_auth_response("secret12", &challenge)
        );
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn digits_are_drawn() {
        let lit_pixels = (0..usize::from(HEIGHT))
            .flat_map(|y| (0..usize::from(WIDTH)).map(move |x| (x, y)))
            .filter(|(x, y)| lit("100", *x, *y))
            .count();
        let eight = (0..usize::from(HEIGHT))
            .flat_map(|y| (0..usize::from(WIDTH)).map(move |x| (x, y)))
            .filter(|(x, y)| lit("888", *x, *y))
            .count();
        assert!(
            lit_pixels > 1000 && eight > lit_pixels,
            "{lit_pixels} {eight}"
        );
    }
}
