"""TODO callbacks"""
