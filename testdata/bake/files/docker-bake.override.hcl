variable "TAG" {
  default = "2.0"
}

target "default" {
  args = {
    B = "from-override"
  }
}
