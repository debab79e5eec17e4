//! NIC specifications as users write them (`loop`, `tap:NAME`, `xdp:IFACE`,
//! `packet:IFACE`), parsed into a device. `vfio:` is recognised and refused
//! with a clear message until that backend exists.

use crate::fault::{FaultConfig, FaultSpecError, FaultyNic};
use crate::loopback::LoopbackNic;
use crate::packet::{PacketError, PacketNic};
use crate::tap::{TapError, TapNic};
use crate::xdp::{XdpError, XdpNic};
use crate::Nic;

/// A parsed NIC specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicSpec {
    /// The in-arena loopback device.
    Loop,
    /// A TAP device with this name (created if it does not exist).
    Tap(String),
    /// AF_XDP on an existing interface the kernel keeps using.
    Xdp(String),
    /// AF_PACKET on an existing interface (where XDP is unavailable).
    Packet(String),
}

/// Errors of parsing or opening a NIC spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("bad NIC spec {0:?}: expected `loop`, `tap:NAME`, `xdp:IFACE` or `packet:IFACE`")]
    Bad(String),
    #[error("NIC spec {0:?}: the {1} backend is not available in this build yet; use `loop`, `tap:NAME`, `xdp:IFACE` or `packet:IFACE`")]
    NotYet(String, &'static str),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Faults(#[from] FaultSpecError),
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error(transparent)]
    Packet(#[from] PacketError),
}

impl std::str::FromStr for NicSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let s = s.trim();
        match s.split_once(':') {
            None if s == "loop" || s == "lo" => Ok(NicSpec::Loop),
            Some(("tap", name)) if !name.is_empty() => Ok(NicSpec::Tap(name.to_string())),
            Some(("xdp", name)) if !name.is_empty() => Ok(NicSpec::Xdp(name.to_string())),
            Some(("packet", name)) if !name.is_empty() => Ok(NicSpec::Packet(name.to_string())),
            Some(("vfio", _)) => Err(SpecError::NotYet(s.into(), "VFIO")),
            _ => Err(SpecError::Bad(s.into())),
        }
    }
}

impl std::fmt::Display for NicSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NicSpec::Loop => f.write_str("loop"),
            NicSpec::Tap(n) => write!(f, "tap:{n}"),
            NicSpec::Xdp(n) => write!(f, "xdp:{n}"),
            NicSpec::Packet(n) => write!(f, "packet:{n}"),
        }
    }
}

impl NicSpec {
    /// Opens the device, wrapped in faults if `RBYPASS_FAULTS` is set.
    pub fn open(&self) -> Result<Box<dyn Nic>, SpecError> {
        let nic: Box<dyn Nic> = match self {
            NicSpec::Loop => Box::new(LoopbackNic::default()),
            NicSpec::Tap(name) => Box::new(TapNic::open(name)?),
            NicSpec::Xdp(name) => Box::new(XdpNic::open(name)?),
            NicSpec::Packet(name) => Box::new(PacketNic::open(name)?),
        };
        Self::with_faults(nic)
    }

    /// Drives the device another process of the stack opened, from its
    /// [`Nic::shared_fds`] (taken with pidfd_getfd); `desc` is the stack's
    /// published description of the device (`xdp:eth0 native copy 2q`).
    /// None: this kind of device cannot be shared between processes.
    pub fn join(
        &self,
        desc: &str,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> Option<Result<Box<dyn Nic>, SpecError>> {
        match self {
            NicSpec::Xdp(name) => {
                let mode = if desc.split_whitespace().any(|w| w == "generic") {
                    crate::xdp::XdpMode::Generic
                } else {
                    crate::xdp::XdpMode::Native
                };
                Some(
                    XdpNic::join(name, mode, fds)
                        .map_err(SpecError::from)
                        .and_then(|n| Self::with_faults(Box::new(n))),
                )
            }
            NicSpec::Packet(name) => Some(
                PacketNic::join(name, fds)
                    .map_err(SpecError::from)
                    .and_then(|n| Self::with_faults(Box::new(n))),
            ),
            _ => None,
        }
    }

    fn with_faults(nic: Box<dyn Nic>) -> Result<Box<dyn Nic>, SpecError> {
        match FaultConfig::from_env()? {
            Some(cfg) if cfg.is_active() => {
                tracing::warn!(?cfg, "RBYPASS_FAULTS: injecting faults on {}", nic.name());
                Ok(Box::new(FaultyNic::new(nic, cfg)))
            }
            _ => Ok(nic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!("loop".parse::<NicSpec>().unwrap(), NicSpec::Loop);
        assert_eq!(
            "tap:rbt0".parse::<NicSpec>().unwrap(),
            NicSpec::Tap("rbt0".into())
        );
        assert_eq!(
            "xdp:eth0".parse::<NicSpec>().unwrap(),
            NicSpec::Xdp("eth0".into())
        );
        assert!(matches!(
            "vfio:0000:03:00.0".parse::<NicSpec>(),
            Err(SpecError::NotYet(..))
        ));
        assert!(matches!("xdp:".parse::<NicSpec>(), Err(SpecError::Bad(_))));
        assert!(matches!("tap:".parse::<NicSpec>(), Err(SpecError::Bad(_))));
        assert!(matches!("wifi".parse::<NicSpec>(), Err(SpecError::Bad(_))));
        assert_eq!(NicSpec::Tap("x".into()).to_string(), "tap:x");
    }
}
