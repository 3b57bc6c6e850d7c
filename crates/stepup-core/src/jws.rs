//! JSON Web Signatures (placeholder, being written).
