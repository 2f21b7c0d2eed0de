//! An in-test SMTP sink playing the primary (owned by the relay tests).
