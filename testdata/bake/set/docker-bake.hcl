# Overridden by --set in the test.
group "default" {
  targets = ["api", "web", "docs"]
}

target "api" {
  tags      = ["registry.example/api:1"]
  platforms = ["linux/amd64"]
}

target "web" {
  tags      = ["registry.example/web:1"]
  platforms = ["linux/amd64"]
}

target "docs" {
  tags = ["registry.example/docs:1"]
}
