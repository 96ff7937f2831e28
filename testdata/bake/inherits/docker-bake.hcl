# inherits: several parents in order, recursively; later ones and the target itself win.
target "_base" {
  context = "src"
  args = {
    GO_VERSION = "1.22"
    CGO        = "0"
  }
  labels = {
    "org.opencontainers.image.vendor" = "example"
  }
  platforms  = ["linux/amd64"]
  cache-from = ["type=registry,ref=registry.example/cache:base"]
}

target "_release" {
  inherits = ["_base"]
  args = {
    CGO = "1"
  }
  platforms  = ["linux/amd64", "linux/arm64"]
  cache-from = ["registry.example/cache:release"]
  output     = ["type=registry"]
}

target "_debug" {
  target  = "debug"
  no-cache = true
}

target "app" {
  inherits = ["_release", "_debug"]
  target   = "runtime"
  tags     = ["registry.example/app:1.0"]
  args = {
    EXTRA = "yes"
  }
}
