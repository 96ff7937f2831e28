from alpine as build
run true
