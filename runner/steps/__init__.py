"""TODO steps"""
