//! rbypass NIC backends.
