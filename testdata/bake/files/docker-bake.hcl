# With docker-bake.override.hcl beside it: both read by default, the override last.
variable "TAG" {
  default = "1.0"
}

target "default" {
  dockerfile = "app.Dockerfile"
  tags       = ["registry.example/app:${TAG}"]
  args = {
    A = "from-main"
    B = "from-main"
  }
}
