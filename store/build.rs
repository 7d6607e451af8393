//! The migrations in `../sql` are embedded at compile time: a change to one must
//! rebuild this crate.
fn main() {
    println!("cargo:rerun-if-changed=../sql");
}
