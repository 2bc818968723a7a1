//! Where credport's files live.
//!
//! [`Paths::from_env`] reads the environment and the platform directories once;
//! [`Paths::from_lookup`] is its twin that takes everything explicitly, for tests.
//!
//! | what | override | default |
//! |---|---|---|
//! | AWS credentials / config | `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE` | `~/.aws/credentials`, `~/.aws/config` |
//! | credport config | `CREDPORT_CONFIG` | `<config dir>/credport/config.toml` |
//! | state (token key) | `CREDPORT_STATE_DIR` | `<local data dir>/credport` |
//! | runtime (daemon.json, token files) | `CREDPORT_RUNTIME_DIR` | `$XDG_RUNTIME_DIR/credport`, else `<state>/run` |

use std::path::PathBuf;

use crate::profiles::AwsPaths;

/// All paths credport uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The home directory (the SSO token cache is under it).
    pub home: PathBuf,
    /// The AWS shared files.
    pub aws: AwsPaths,
    /// credport's config file.
    pub config: PathBuf,
    /// Private state: the token key.
    pub state_dir: PathBuf,
    /// Per-session runtime files: `daemon.json`, exec token files.
    pub runtime_dir: PathBuf,
}

/// No home directory could be determined.
#[derive(Debug, thiserror::Error)]
#[error("cannot find the home directory (set HOME)")]
pub struct NoHome;

/// Platform directories, as `dirs` reports them (or a test chooses).
#[derive(Debug, Clone, Default)]
pub struct PlatformDirs {
    /// The home directory.
    pub home: Option<PathBuf>,
    /// The user config directory (`~/.config` on Linux).
    pub config: Option<PathBuf>,
    /// The user local data directory (`~/.local/share` on Linux).
    pub data_local: Option<PathBuf>,
    /// The user runtime directory (`$XDG_RUNTIME_DIR`).
    pub runtime: Option<PathBuf>,
}

impl Paths {
    /// Paths from the process environment and the platform's directories.
    pub fn from_env() -> Result<Self, NoHome> {
        let dirs = PlatformDirs {
            home: dirs::home_dir(),
            config: dirs::config_dir(),
            data_local: dirs::data_local_dir(),
            runtime: dirs::runtime_dir(),
        };
        Self::from_lookup(&|k| std::env::var(k).ok(), &dirs)
    }

    /// Paths from an explicit environment lookup and directories.
    pub fn from_lookup(env: &dyn crate::env::Env, dirs: &PlatformDirs) -> Result<Self, NoHome> {
        let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let aws = AwsPaths::from_env(env, dirs.home.clone()).ok_or(NoHome)?;
        let home = dirs.home.clone().ok_or(NoHome)?;
        let config = var("CREDPORT_CONFIG").unwrap_or_else(|| {
            dirs.config
                .clone()
                .unwrap_or_else(|| home.join(".config"))
                .join("credport")
                .join("config.toml")
        });
        let state_dir = var("CREDPORT_STATE_DIR").unwrap_or_else(|| {
            dirs.data_local
                .clone()
                .unwrap_or_else(|| home.join(".local").join("share"))
                .join("credport")
        });
        let runtime_dir = var("CREDPORT_RUNTIME_DIR").unwrap_or_else(|| match &dirs.runtime {
            Some(r) => r.join("credport"),
            None => state_dir.join("run"),
        });
        Ok(Paths {
            home,
            aws,
            config,
            state_dir,
            runtime_dir,
        })
    }

    /// The token key file.
    pub fn token_key(&self) -> PathBuf {
        self.state_dir.join("token-key")
    }

    /// The file where a running daemon says where it listens.
    pub fn daemon_state(&self) -> PathBuf {
        self.runtime_dir.join("daemon.json")
    }

    /// Projects registered by directory (`credport project add`, `exec`, `env`).
    pub fn registered_projects(&self) -> PathBuf {
        self.state_dir.join("projects.toml")
    }

    /// Persistent per-scope token files (`credport env`), rewritten on rotation.
    pub fn token_files_dir(&self) -> PathBuf {
        self.state_dir.join("tokens")
    }

    /// The running daemon's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir.join("control.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let dirs = PlatformDirs {
            home: Some("/h".into()),
            config: Some("/h/.config".into()),
            data_local: Some("/h/.local/share".into()),
            runtime: None,
        };
        let p = Paths::from_lookup(&|_| None, &dirs).unwrap();
        assert_eq!(p.home, PathBuf::from("/h"));
        assert_eq!(p.config, PathBuf::from("/h/.config/credport/config.toml"));
        assert_eq!(
            p.token_key(),
            PathBuf::from("/h/.local/share/credport/token-key")
        );
        assert_eq!(
            p.daemon_state(),
            PathBuf::from("/h/.local/share/credport/run/daemon.json")
        );
        let env = |k: &str| match k {
            "CREDPORT_CONFIG" => Some("/c.toml".into()),
            "CREDPORT_RUNTIME_DIR" => Some("/run/x".into()),
            _ => None,
        };
        let p = Paths::from_lookup(&env, &dirs).unwrap();
        assert_eq!(p.config, PathBuf::from("/c.toml"));
        assert_eq!(p.daemon_state(), PathBuf::from("/run/x/daemon.json"));
        assert!(Paths::from_lookup(&|_| None, &PlatformDirs::default()).is_err());
    }
}
