# A 3x2 matrix: one target per (distro, variant), named by the template, grouped under "app".
group "default" {
  targets = ["app"]
}

target "app" {
  matrix = {
    distro  = ["alpine", "debian", "ubuntu"]
    variant = ["slim", "full"]
  }
  name       = "app-${distro}-${variant}"
  dockerfile = "${distro}.Dockerfile"
  args = {
    VARIANT = variant
  }
  tags = ["registry.example/app:${distro}-${variant}"]
}
