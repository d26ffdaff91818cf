fn main() {
    println!("{}", hub_layout::HUB_PROTOCOL_VERSION);
}
