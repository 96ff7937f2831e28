# target: contexts: "app" uses "base" as its named context "base"; "base" is built for it.
target "base" {
  dockerfile = "base.Dockerfile"
  tags       = ["registry.example/base:1"]
}

target "app" {
  contexts = {
    base  = "target:base"
    extra = "docker-image://registry.example/extra:1"
  }
  tags = ["registry.example/app:1"]
}
