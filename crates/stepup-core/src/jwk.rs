//! JSON Web Keys (placeholder, being written).
