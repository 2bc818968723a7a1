//! The service manager's files: the systemd units and the launchd LaunchAgent, rendered
//! from the committed references (`systemd/`, `launchd/`) for the real binary path, home
//! and listen addresses, and where each platform keeps them.
//!
//! Pure text and paths: nothing here touches the filesystem or runs a command; that is
//! [`super::install`](mod@super::install).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The committed reference service unit (binary placeholder [`PLACEHOLDER_BINARY`]).
pub const SYSTEMD_SERVICE_TEMPLATE: &str = include_str!("../../systemd/credport.service");
/// The committed reference socket unit (listen placeholder [`PLACEHOLDER_LISTEN`]).
pub const SYSTEMD_SOCKET_TEMPLATE: &str = include_str!("../../systemd/credport.socket");
/// The committed reference LaunchAgent (placeholders [`PLACEHOLDER_BINARY`] and
/// [`PLACEHOLDER_HOME`]).
pub const LAUNCHD_PLIST_TEMPLATE: &str = include_str!("../../launchd/dev.credport.agent.plist");

/// The binary path written in the committed reference units.
pub const PLACEHOLDER_BINARY: &str = "/usr/local/bin/credport";
/// The home directory written in the committed reference plist.
pub const PLACEHOLDER_HOME: &str = "/Users/you";
/// The listen line of the committed reference socket unit.
pub const PLACEHOLDER_LISTEN: &str = "ListenStream=127.0.0.1:9911\n";

/// The systemd service unit's name.
pub const SYSTEMD_SERVICE: &str = "credport.service";
/// The systemd socket unit's name.
pub const SYSTEMD_SOCKET: &str = "credport.socket";
/// The launchd label (and the plist's file stem).
pub const LAUNCHD_LABEL: &str = "dev.credport.agent";

/// A service manager credport can be installed into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// systemd user units (Linux).
    Systemd,
    /// A launchd LaunchAgent (macOS).
    Launchd,
}

impl Platform {
    /// The platform of the running OS: launchd on macOS, systemd elsewhere.
    pub fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::Launchd
        } else {
            Platform::Systemd
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Platform::Systemd => "systemd",
            Platform::Launchd => "launchd",
        })
    }
}

/// Quotes one word for a systemd command line (`ExecStart=`): `%` becomes `%%` (specifier)
/// and `$` becomes `$$` (variable expansion); a word with spaces, quotes or backslashes is
/// double-quoted with C escapes.
fn systemd_word(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if escaped
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'))
    {
        let mut q = String::from("\"");
        for c in escaped.chars() {
            match c {
                '"' => q.push_str("\\\""),
                '\\' => q.push_str("\\\\"),
                _ => q.push(c),
            }
        }
        q.push('"');
        q
    } else {
        escaped
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The service unit for `binary` (an absolute path): the committed
/// `systemd/credport.service` with `ExecStart=<binary> serve`.
///
/// A path with characters special to systemd is quoted; callers check it with
/// [`install`](super::install::install), which refuses relative or non-UTF-8 paths.
pub fn render_systemd_service(binary: &Path) -> String {
    let word = systemd_word(&binary.to_string_lossy());
    SYSTEMD_SERVICE_TEMPLATE.replace(
        &format!("ExecStart={PLACEHOLDER_BINARY} serve"),
        &format!("ExecStart={word} serve"),
    )
}

/// The socket unit listening on `listen` (one `ListenStream=` each): the committed
/// `systemd/credport.socket` with its address replaced. An empty list keeps the default
/// (`127.0.0.1:9911`).
pub fn render_systemd_socket(listen: &[SocketAddr]) -> String {
    if listen.is_empty() {
        return SYSTEMD_SOCKET_TEMPLATE.to_string();
    }
    let lines: String = listen
        .iter()
        .map(|a| format!("ListenStream={a}\n"))
        .collect();
    SYSTEMD_SOCKET_TEMPLATE.replace(PLACEHOLDER_LISTEN, &lines)
}

/// The LaunchAgent for `binary` and `home`: the committed
/// `launchd/dev.credport.agent.plist` with the binary path and the log paths under
/// `<home>/Library/Logs` made absolute (launchd expands neither `~` nor `$HOME`).
pub fn render_launchd_plist(binary: &Path, home: &Path) -> String {
    let bin = xml_escape(&binary.to_string_lossy());
    let home = xml_escape(&home.to_string_lossy());
    // Only the <string> values, not the explanatory comment that names the placeholders.
    let (head, body) = LAUNCHD_PLIST_TEMPLATE
        .split_once("<plist")
        .unwrap_or(("", LAUNCHD_PLIST_TEMPLATE));
    let body = body
        .replace(
            &format!("<string>{PLACEHOLDER_BINARY}</string>"),
            &format!("<string>{bin}</string>"),
        )
        .replace(
            &format!("<string>{PLACEHOLDER_HOME}/"),
            &format!("<string>{home}/"),
        );
    format!("{head}<plist{body}")
}

/// One file install writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// Where it goes.
    pub path: PathBuf,
    /// Its full content.
    pub content: String,
}

/// The unit files for `platform`, rendered for `binary` and `home` and (systemd)
/// listening on `listen` (empty: the default address).
pub fn unit_files(
    platform: Platform,
    binary: &Path,
    home: &Path,
    listen: &[SocketAddr],
) -> Vec<UnitFile> {
    match platform {
        Platform::Systemd => {
            let dir = systemd_unit_dir(home);
            vec![
                UnitFile {
                    path: dir.join(SYSTEMD_SERVICE),
                    content: render_systemd_service(binary),
                },
                UnitFile {
                    path: dir.join(SYSTEMD_SOCKET),
                    content: render_systemd_socket(listen),
                },
            ]
        }
        Platform::Launchd => vec![UnitFile {
            path: launchd_plist_path(home),
            content: render_launchd_plist(binary, home),
        }],
    }
}

/// `~/.config/systemd/user`, where systemd looks for user units.
pub fn systemd_unit_dir(home: &Path) -> PathBuf {
    home.join(".config/systemd/user")
}

/// `~/Library/LaunchAgents/dev.credport.agent.plist`.
pub fn launchd_plist_path(home: &Path) -> PathBuf {
    home.join("Library/LaunchAgents")
        .join(format!("{LAUNCHD_LABEL}.plist"))
}

/// The unit file paths of `platform` under `home`.
pub fn installed_paths(platform: Platform, home: &Path) -> Vec<PathBuf> {
    match platform {
        Platform::Systemd => {
            let dir = systemd_unit_dir(home);
            vec![dir.join(SYSTEMD_SERVICE), dir.join(SYSTEMD_SOCKET)]
        }
        Platform::Launchd => vec![launchd_plist_path(home)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_units_are_the_rendering_of_the_placeholders() {
        let bin = Path::new(PLACEHOLDER_BINARY);
        assert_eq!(render_systemd_service(bin), SYSTEMD_SERVICE_TEMPLATE);
        assert_eq!(
            render_systemd_socket(&["127.0.0.1:9911".parse().unwrap()]),
            SYSTEMD_SOCKET_TEMPLATE
        );
        assert_eq!(render_systemd_socket(&[]), SYSTEMD_SOCKET_TEMPLATE);
        assert_eq!(
            render_launchd_plist(bin, Path::new(PLACEHOLDER_HOME)),
            LAUNCHD_PLIST_TEMPLATE
        );
        // The placeholders the renderers replace are really there.
        assert!(
            SYSTEMD_SERVICE_TEMPLATE.contains(&format!("ExecStart={PLACEHOLDER_BINARY} serve\n"))
        );
        assert!(SYSTEMD_SOCKET_TEMPLATE.contains(PLACEHOLDER_LISTEN));
        assert!(LAUNCHD_PLIST_TEMPLATE.contains(&format!("<string>{PLACEHOLDER_BINARY}</string>")));
        assert!(LAUNCHD_PLIST_TEMPLATE.contains(&format!(
            "<string>{PLACEHOLDER_HOME}/Library/Logs/credport.log</string>"
        )));
    }

    #[test]
    fn rendering_substitutes_and_escapes() {
        let s = render_systemd_service(Path::new("/opt/my tools/100%/cred$port"));
        assert!(
            s.contains("ExecStart=\"/opt/my tools/100%%/cred$$port\" serve\n"),
            "{s}"
        );
        assert!(!s.contains(PLACEHOLDER_BINARY));
        let s = render_systemd_socket(&[
            "127.0.0.1:9000".parse().unwrap(),
            "[::1]:9000".parse().unwrap(),
        ]);
        assert!(
            s.contains("ListenStream=127.0.0.1:9000\nListenStream=[::1]:9000\n"),
            "{s}"
        );
        assert!(!s.contains("9911\n"));
        let p = render_launchd_plist(
            Path::new("/Users/a&b/bin/credport"),
            Path::new("/Users/a&b"),
        );
        assert!(
            p.contains("<string>/Users/a&amp;b/bin/credport</string>"),
            "{p}"
        );
        assert!(p.contains("<string>/Users/a&amp;b/Library/Logs/credport.log</string>"));
        assert!(!p.contains("<string>/Users/you"));
    }
}
